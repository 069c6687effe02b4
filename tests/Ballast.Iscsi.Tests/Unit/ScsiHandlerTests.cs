using System.Buffers.Binary;
using Ballast.Engine.Volumes;
using Ballast.Iscsi.Scsi;
using Ballast.Iscsi.Tests.Support;

namespace Ballast.Iscsi.Tests.Unit;

[CancelAfter(60_000)]
public class ScsiHandlerTests
{
    private ScsiHarness _h = null!;

    [SetUp]
    public async Task SetUp() => _h = await ScsiHarness.CreateAsync();

    [TearDown]
    public async Task TearDown() => await _h.DisposeAsync();

    private long Blocks => _h.Volume.Size / 512;

    private static void AssertSense(ScsiTask t, SenseKey key, byte asc, byte ascq = 0)
    {
        Assert.That(t.Status, Is.EqualTo(ScsiStatus.CheckCondition));
        Assert.That(ScsiHarness.SenseOf(t), Is.EqualTo((key, asc, ascq)));
    }

    [TestCase((byte)0x83)]
    [TestCase((byte)0xc0)]
    [TestCase((byte)0x04)]
    public async Task Unsupported_opcodes_get_invalid_command_operation_code(byte opcode)
    {
        var t = await _h.RunAsync([opcode, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        AssertSense(t, SenseKey.IllegalRequest, 0x20);
    }

    [Test]
    public async Task Unknown_service_action_gets_invalid_field_in_cdb()
    {
        var t = await _h.RunAsync([0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
        AssertSense(t, SenseKey.IllegalRequest, 0x24);
    }

    [Test]
    public async Task Reads_and_writes_past_the_end_get_lba_out_of_range()
    {
        AssertSense(await _h.RunAsync(Cdb.Read10((uint)Blocks, 1), readLength: 512), SenseKey.IllegalRequest, 0x21);
        AssertSense(await _h.RunAsync(Cdb.Read10((uint)Blocks - 1, 2), readLength: 1024), SenseKey.IllegalRequest, 0x21);
        AssertSense(await _h.RunAsync(Cdb.Write10((uint)Blocks, 1), new byte[512]), SenseKey.IllegalRequest, 0x21);
        AssertSense(await _h.RunAsync(Cdb.Read16(ulong.MaxValue, 1), readLength: 512), SenseKey.IllegalRequest, 0x21);
        AssertSense(await _h.RunAsync(Cdb.Read16(1, uint.MaxValue), readLength: 512), SenseKey.IllegalRequest, 0x21);
        AssertSense(await _h.RunAsync(Cdb.Write16(ulong.MaxValue - 1, 4), new byte[2048]), SenseKey.IllegalRequest, 0x21);
    }

    [Test]
    public async Task Invalid_cdb_fields_get_invalid_field_in_cdb()
    {
        AssertSense(await _h.RunAsync(Cdb.Read10(0, 1, flags: 0x20), readLength: 512), SenseKey.IllegalRequest, 0x24); // RDPROTECT
        AssertSense(await _h.RunAsync(Cdb.Write10(0, 1, flags: 0x20), new byte[512]), SenseKey.IllegalRequest, 0x24); // WRPROTECT
        AssertSense(await _h.RunAsync(Cdb.Inquiry(evpd: false, page: 0x80)), SenseKey.IllegalRequest, 0x24);
        AssertSense(await _h.RunAsync(Cdb.Inquiry(evpd: true, page: 0x99)), SenseKey.IllegalRequest, 0x24);
        AssertSense(await _h.RunAsync(Cdb.Read16(0, (8 << 20) / 512 + 1), readLength: 512), SenseKey.IllegalRequest, 0x24); // > MAXIMUM TRANSFER LENGTH
        var naca = Cdb.Read10(0, 1);
        naca[9] = 0x04;
        AssertSense(await _h.RunAsync(naca, readLength: 512), SenseKey.IllegalRequest, 0x24);
    }

    [Test]
    public async Task Written_data_reads_back_and_fua_is_accepted()
    {
        var data = TestData(4096, 1);
        var w = await _h.RunAsync(Cdb.Write10(7, 8, flags: 0x08), data);
        Assert.That(w.Status, Is.EqualTo(ScsiStatus.Good));
        var r = await _h.RunAsync(Cdb.Read10(7, 8), readLength: 4096);
        Assert.That(ScsiHarness.DataOf(r), Is.EqualTo(data));
    }

    [Test]
    public async Task Standard_inquiry_describes_a_disk_and_truncates_to_the_allocation_length()
    {
        var t = await _h.RunAsync(Cdb.Inquiry(alloc: 36));
        var d = ScsiHarness.DataOf(t);
        Assert.Multiple(() =>
        {
            Assert.That(d, Has.Length.EqualTo(36));
            Assert.That(d[0], Is.EqualTo(0x00), "direct access block device");
            Assert.That(d[2], Is.EqualTo(0x06), "SPC-4");
            Assert.That(System.Text.Encoding.ASCII.GetString(d, 8, 8), Is.EqualTo("BALLAST "));
        });
    }

    [Test]
    public async Task Naa_identifier_is_stable_per_volume_and_derived_from_its_uid()
    {
        static byte[] Naa(ScsiTask t) => ScsiHarness.DataOf(t)[8..24];
        var a = Naa(await _h.RunAsync(Cdb.Inquiry(true, 0x83)));
        var b = Naa(await _h.RunAsync(Cdb.Inquiry(true, 0x83)));
        Assert.That(a, Is.EqualTo(b));
        Assert.That(a[0] >> 4, Is.EqualTo(6), "NAA IEEE Registered Extended");
        var other = await _h.Pool!.CreateVolumeAsync("w", 1 << 20);
        await using var h2 = ScsiHarness.Over(other);
        var c = Naa(await h2.RunAsync(Cdb.Inquiry(true, 0x83)));
        Assert.That(c, Is.Not.EqualTo(a));
        var expected = InquiryCommand.Naa(_h.Volume.Uid);
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(a), Is.EqualTo(expected[0]));
    }

    [Test]
    public async Task Thin_volumes_report_lbpme_and_logical_block_provisioning()
    {
        var rc = ScsiHarness.DataOf(await _h.RunAsync(Cdb.ReadCapacity16(), readLength: 32));
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(rc), Is.EqualTo((ulong)Blocks - 1));
        Assert.That(rc[14] & 0xc0, Is.EqualTo(0xc0), "LBPME and LBPRZ");
        var lbp = ScsiHarness.DataOf(await _h.RunAsync(Cdb.Inquiry(true, 0xb2)));
        Assert.That(lbp[5] & 0xe4, Is.EqualTo(0xe4), "LBPU, LBPWS, LBPWS10, LBPRZ");
        var supported = ScsiHarness.DataOf(await _h.RunAsync(Cdb.Inquiry(true, 0x00)));
        Assert.That(supported[4..], Is.EqualTo(new byte[] { 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 }));
    }

    [TestCase(512, 8u)]
    [TestCase(4096, 0u)]
    public async Task Block_limits_give_an_unmap_granularity_of_4_KiB_only_on_512_byte_blocks(int blockSize, uint expected)
    {
        // On larger blocks it is one block, and qemu's driver turns a reported one into reads
        // that abort it (see InquiryCommand.BlockLimits; the qemu-io test in InitiatorToolsTests).
        await using var h = await ScsiHarness.CreateAsync(blockSize: blockSize);
        var bl = ScsiHarness.DataOf(await h.RunAsync(Cdb.Inquiry(true, 0xb0)));
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(bl.AsSpan(28)), Is.EqualTo(expected), "OPTIMAL UNMAP GRANULARITY");
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(bl.AsSpan(24)), Is.Not.Zero, "unmap is still offered");
    }

    [Test]
    public async Task Unmap_deallocates_and_get_lba_status_reports_it()
    {
        await _h.RunAsync(Cdb.Write16(0, 64), TestData(64 * 512, 2));
        var u = await _h.RunAsync(Cdb.Unmap(24), Cdb.UnmapList(8, 16));
        Assert.That(u.Status, Is.EqualTo(ScsiStatus.Good));
        var s = ScsiHarness.DataOf(await _h.RunAsync(Cdb.GetLbaStatus(8), readLength: 1024));
        Assert.Multiple(() =>
        {
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(s.AsSpan(8)), Is.EqualTo(8UL), "first descriptor starts at the LBA asked for");
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(16)), Is.EqualTo(16u));
            Assert.That(s[20], Is.EqualTo(1), "deallocated");
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(s.AsSpan(24)), Is.EqualTo(24UL));
            Assert.That(s[36], Is.EqualTo(0), "mapped");
        });
        var r = ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read10(8, 16), readLength: 8192));
        Assert.That(r, Is.All.EqualTo(0));
    }

    [Test]
    public async Task Write_same_with_unmap_reads_back_zero_whatever_the_data()
    {
        await _h.RunAsync(Cdb.Write16(0, 16), TestData(16 * 512, 3));
        var pattern = Enumerable.Repeat((byte)0xff, 512).ToArray();
        var t = await _h.RunAsync(Cdb.WriteSame16(0, 16, unmap: true), pattern);
        Assert.That(t.Status, Is.EqualTo(ScsiStatus.Good));
        Assert.That(ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read10(0, 16), readLength: 8192)), Is.All.EqualTo(0));
        var w = await _h.RunAsync(Cdb.WriteSame16(100, 3, unmap: false), pattern);
        Assert.That(w.Status, Is.EqualTo(ScsiStatus.Good));
        Assert.That(ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read10(100, 3), readLength: 1536)), Is.All.EqualTo(0xff));
        AssertSense(await _h.RunAsync(Cdb.WriteSame16(0, 1, unmap: false), new byte[1024]), SenseKey.IllegalRequest, 0x24);
    }

    [Test]
    public async Task Compare_and_write_writes_on_match_and_reports_miscompare_otherwise()
    {
        var a = TestData(1024, 4);
        await _h.RunAsync(Cdb.Write10(10, 2), a);
        var b = TestData(1024, 5);
        var ok = await _h.RunAsync(Cdb.CompareAndWrite(10, 2), [.. a, .. b]);
        Assert.That(ok.Status, Is.EqualTo(ScsiStatus.Good));
        Assert.That(ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read10(10, 2), readLength: 1024)), Is.EqualTo(b));
        var wrong = (byte[])a.Clone();
        var bad = await _h.RunAsync(Cdb.CompareAndWrite(10, 2), [.. wrong, .. a]);
        AssertSense(bad, SenseKey.Miscompare, 0x1d);
        Assert.That(ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read10(10, 2), readLength: 1024)), Is.EqualTo(b), "nothing written on miscompare");
        AssertSense(await _h.RunAsync(Cdb.CompareAndWrite(10, 2), new byte[1024]), SenseKey.IllegalRequest, 0x24);
    }

    [Test]
    public async Task Compare_and_write_is_atomic_against_concurrent_compare_and_writes_and_writes()
    {
        // Each worker increments a counter in block 0 with CAW(old -> old+1), retrying on miscompare,
        // while plain writes hit the neighbouring blocks. A non-atomic CAW would lose increments.
        await _h.RunAsync(Cdb.Write10(0, 1), new byte[512]);
        const int Workers = 8, Increments = 40;
        var successes = 0;
        async Task Worker(int w)
        {
            for (var i = 0; i < Increments;)
            {
                var cur = ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read10(0, 1), readLength: 512));
                var next = (byte[])cur.Clone();
                BinaryPrimitives.WriteInt32LittleEndian(next, BinaryPrimitives.ReadInt32LittleEndian(cur) + 1);
                var t = await _h.RunAsync(Cdb.CompareAndWrite(0, 1), [.. cur, .. next]);
                if (t.Status == ScsiStatus.Good)
                {
                    Interlocked.Increment(ref successes);
                    i++;
                }
                await _h.RunAsync(Cdb.Write10((uint)(1 + w), 1), TestData(512, w));
            }
        }
        await Task.WhenAll(Enumerable.Range(0, Workers).Select(w => Task.Run(() => Worker(w))));
        var final = ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read10(0, 1), readLength: 512));
        Assert.That(BinaryPrimitives.ReadInt32LittleEndian(final), Is.EqualTo(Workers * Increments));
        Assert.That(successes, Is.EqualTo(Workers * Increments));
    }

    [Test]
    public async Task Write_atomic_takes_up_to_the_advertised_length_and_no_more()
    {
        var bl = ScsiHarness.DataOf(await _h.RunAsync(Cdb.Inquiry(true, 0xb0)));
        var max = BinaryPrimitives.ReadUInt32BigEndian(bl.AsSpan(44));
        Assert.That(max, Is.EqualTo(256u));
        var cdb = Cdb.Sixteen(0x9c, 8, 0);
        cdb[12] = (byte)(max >> 8);
        cdb[13] = (byte)max;
        var data = TestData((int)max * 512, 8);
        Assert.That((await _h.RunAsync(cdb, data)).Status, Is.EqualTo(ScsiStatus.Good));
        Assert.That(ScsiHarness.DataOf(await _h.RunAsync(Cdb.Read16(8, max), readLength: data.Length)), Is.EqualTo(data));
        cdb[12] = (byte)((max + 1) >> 8);
        cdb[13] = (byte)(max + 1);
        AssertSense(await _h.RunAsync(cdb, new byte[(max + 1) * 512]), SenseKey.IllegalRequest, 0x24);
    }

    [Test]
    public async Task Snapshots_are_write_protected()
    {
        await using var snap = await ScsiHarness.CreateAsync(snapshot: true);
        var t = await snap.RunAsync(Cdb.Write10(0, 1), new byte[512]);
        AssertSense(t, SenseKey.DataProtect, 0x27);
        var ms = ScsiHarness.DataOf(await snap.RunAsync(Cdb.ModeSense6(0x3f)));
        Assert.That(ms[2] & 0x80, Is.EqualTo(0x80), "WP in the mode parameter header");
        var rc = ScsiHarness.DataOf(await snap.RunAsync(Cdb.ReadCapacity16(), readLength: 32));
        Assert.That(rc[14] & 0x80, Is.Zero, "no LBPME on a read-only LU");
        AssertSense(await snap.RunAsync(Cdb.Unmap(24), Cdb.UnmapList(0, 1)), SenseKey.DataProtect, 0x27);
    }

    [TestCase(BlockError.OutOfRange, false, 0x5, 0x21, 0x00)]
    [TestCase(BlockError.Overflow, false, 0x5, 0x21, 0x00)]
    [TestCase(BlockError.InvalidArgument, false, 0x5, 0x24, 0x00)]
    [TestCase(BlockError.ReadOnly, true, 0x7, 0x27, 0x00)]
    [TestCase(BlockError.NoSpace, true, 0x7, 0x27, 0x07)]
    [TestCase(BlockError.Io, false, 0x3, 0x11, 0x00)]
    [TestCase(BlockError.Io, true, 0x3, 0x0c, 0x00)]
    [TestCase(BlockError.Gone, false, 0x5, 0x25, 0x00)]
    [TestCase(BlockError.Fenced, true, 0x2, 0x04, 0x0b)]
    public async Task Volume_errors_map_to_sense_data(BlockError error, bool write, int key, byte asc, byte ascq)
    {
        await using var h = ScsiHarness.Over(new FailingVolume(error));
        var t = write ? await h.RunAsync(Cdb.Write10(0, 1), new byte[512]) : await h.RunAsync(Cdb.Read10(0, 1), readLength: 512);
        AssertSense(t, (SenseKey)key, asc, ascq);
    }

    [Test]
    public async Task Flush_errors_are_reported_never_success()
    {
        await using var h = ScsiHarness.Over(new FailingVolume(BlockError.Io));
        var t = await h.RunAsync([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        Assert.That(t.Status, Is.EqualTo(ScsiStatus.CheckCondition));
    }

    [Test]
    public async Task Mode_select_of_d_sense_switches_to_descriptor_sense()
    {
        var other = _h.AddNexus("iqn.2026-11.test:b,i,0x000002", "iqn.2026-11.io.ballast:v,t,0x0001");
        var control = ScsiHarness.DataOf(await _h.RunAsync(Cdb.ModeSense6(0x0a)));
        var page = control[(4 + control[3])..];
        page[2] |= 0x04; // D_SENSE
        var list = new byte[4 + page.Length];
        page.CopyTo(list, 4);
        var sel = await _h.RunAsync(Cdb.ModeSelect6((byte)list.Length), list);
        Assert.That(sel.Status, Is.EqualTo(ScsiStatus.Good));
        var t = await _h.RunAsync(Cdb.Read10((uint)Blocks, 1), readLength: 512);
        Assert.That(t.SenseData[0], Is.EqualTo(0x72));
        AssertSense(t, SenseKey.IllegalRequest, 0x21);
        AssertSense(await _h.RunAsync([0x00, 0, 0, 0, 0, 0], nexus: other), SenseKey.UnitAttention, 0x2a, 0x01);
    }

    [Test]
    public async Task Mode_select_of_an_unchangeable_field_is_refused()
    {
        var caching = ScsiHarness.DataOf(await _h.RunAsync(Cdb.ModeSense6(0x08)));
        var page = caching[(4 + caching[3])..];
        page[2] |= 0x01; // RCD is not changeable
        var list = new byte[4 + page.Length];
        page.CopyTo(list, 4);
        AssertSense(await _h.RunAsync(Cdb.ModeSelect6((byte)list.Length), list), SenseKey.IllegalRequest, 0x26);
    }

    [Test]
    public async Task Report_supported_opcodes_lists_the_command_table()
    {
        var t = await _h.RunAsync([0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]);
        var d = ScsiHarness.DataOf(t);
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(d), Is.EqualTo((uint)(8 * CommandTable.All.Length)));
        var one = ScsiHarness.DataOf(await _h.RunAsync([0xa3, 0x0c, 0x01, 0x2a, 0, 0, 0, 0, 1, 0, 0, 0]));
        Assert.That(one[1] & 0x07, Is.EqualTo(3), "WRITE(10) supported");
        Assert.That(one[4], Is.EqualTo(0x2a), "usage data starts with the opcode");
    }

    internal static byte[] TestData(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}
