using System.Buffers.Binary;
using Ballast.Iscsi.Scsi;
using Ballast.Iscsi.Session;
using Ballast.Iscsi.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace Ballast.Iscsi.Tests.Unit;

[CancelAfter(60_000)]
public class ReservationTests
{
    private ScsiHarness _h = null!;
    private LunNexus _a = null!;
    private LunNexus _b = null!;
    private LunNexus _c = null!; // never registers

    [SetUp]
    public async Task SetUp()
    {
        _h = await ScsiHarness.CreateAsync();
        _a = _h.Nexus;
        _b = _h.AddNexus("iqn.2026-11.test:b,i,0x000002", "iqn.2026-11.io.ballast:v,t,0x0001");
        _c = _h.AddNexus("iqn.2026-11.test:c,i,0x000003", "iqn.2026-11.io.ballast:v,t,0x0001");
    }

    [TearDown]
    public async Task TearDown() => await _h.DisposeAsync();

    private async Task<byte> Out(LunNexus n, byte action, ulong key, ulong saKey = 0, byte type = 0) =>
        (await _h.RunAsync(Cdb.PrOut(action, type), Cdb.PrOutData(key, saKey), nexus: n)).Status;

    private async Task<byte> ReadStatus(LunNexus n) => (await _h.RunAsync(Cdb.Read10(0, 1), readLength: 512, nexus: n)).Status;
    private async Task<byte> WriteStatus(LunNexus n) => (await _h.RunAsync(Cdb.Write10(0, 1), new byte[512], nexus: n)).Status;

    private const byte Register = 0, Reserve = 1, Release = 2, Clear = 3, Preempt = 4;
    private const byte Good = ScsiStatus.Good, Conflict = ScsiStatus.ReservationConflict;

    // SPC-4 §5.13.1 Table 63 (reads/writes): holder, registered non-holder, unregistered.
    [TestCase((byte)1, Good, Good, Good, Conflict, Good, Conflict, TestName = "Write_exclusive_lets_others_read_but_not_write")]
    [TestCase((byte)3, Good, Good, Conflict, Conflict, Conflict, Conflict, TestName = "Exclusive_access_blocks_others_reads_and_writes")]
    [TestCase((byte)5, Good, Good, Good, Good, Good, Conflict, TestName = "Write_exclusive_registrants_only_lets_registrants_write")]
    [TestCase((byte)6, Good, Good, Good, Good, Conflict, Conflict, TestName = "Exclusive_access_registrants_only_blocks_unregistered")]
    [TestCase((byte)7, Good, Good, Good, Good, Good, Conflict, TestName = "Write_exclusive_all_registrants_lets_registrants_write")]
    [TestCase((byte)8, Good, Good, Good, Good, Conflict, Conflict, TestName = "Exclusive_access_all_registrants_blocks_unregistered")]
    public async Task Reservation_types_gate_reads_and_writes(byte type, byte holderRead, byte holderWrite, byte regRead, byte regWrite, byte unregRead, byte unregWrite)
    {
        Assert.That(await Out(_a, Register, 0, 0xa), Is.EqualTo(Good));
        Assert.That(await Out(_b, Register, 0, 0xb), Is.EqualTo(Good));
        Assert.That(await Out(_a, Reserve, 0xa, type: type), Is.EqualTo(Good));
        Assert.Multiple(async () =>
        {
            Assert.That(await ReadStatus(_a), Is.EqualTo(holderRead), "holder read");
            Assert.That(await WriteStatus(_a), Is.EqualTo(holderWrite), "holder write");
            Assert.That(await ReadStatus(_b), Is.EqualTo(regRead), "registered read");
            Assert.That(await WriteStatus(_b), Is.EqualTo(regWrite), "registered write");
            Assert.That(await ReadStatus(_c), Is.EqualTo(unregRead), "unregistered read");
            Assert.That(await WriteStatus(_c), Is.EqualTo(unregWrite), "unregistered write");
        });
        var rr = ScsiHarness.DataOf(await _h.RunAsync(Cdb.PrIn(1), readLength: 1024, nexus: _c));
        Assert.That(rr[21] & 0x0f, Is.EqualTo(type));
        var expectedKey = type is 7 or 8 ? 0UL : 0xaUL;
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(rr.AsSpan(8)), Is.EqualTo(expectedKey), "all-registrants reservations report key 0");
    }

    [Test]
    public async Task Register_with_a_wrong_key_conflicts_and_keys_are_listed()
    {
        Assert.That(await Out(_a, Register, 0, 0x11), Is.EqualTo(Good));
        Assert.That(await Out(_a, Register, 0x99, 0x12), Is.EqualTo(Conflict));
        Assert.That(await Out(_b, Register, 5, 0x22), Is.EqualTo(Conflict), "unregistered with a non-zero key");
        Assert.That(await Out(_b, Register, 0, 0x22), Is.EqualTo(Good));
        var keys = ScsiHarness.DataOf(await _h.RunAsync(Cdb.PrIn(0), readLength: 1024));
        Assert.Multiple(() =>
        {
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(keys), Is.EqualTo(2u), "generation counts registrations");
            Assert.That(BinaryPrimitives.ReadUInt32BigEndian(keys.AsSpan(4)), Is.EqualTo(16u));
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(keys.AsSpan(8)), Is.EqualTo(0x11UL));
            Assert.That(BinaryPrimitives.ReadUInt64BigEndian(keys.AsSpan(16)), Is.EqualTo(0x22UL));
        });
    }

    [Test]
    public async Task Release_needs_the_same_type_and_clear_removes_everything()
    {
        await Out(_a, Register, 0, 1);
        await Out(_b, Register, 0, 2);
        Assert.That(await Out(_a, Reserve, 1, type: 1), Is.EqualTo(Good));
        Assert.That(await Out(_b, Reserve, 2, type: 1), Is.EqualTo(Conflict), "someone else holds it");
        var bad = await _h.RunAsync(Cdb.PrOut(Release, 3), Cdb.PrOutData(1, 0), nexus: _a);
        Assert.That(ScsiHarness.SenseOf(bad), Is.EqualTo((SenseKey.IllegalRequest, (byte)0x26, (byte)0x04)));
        Assert.That(await Out(_a, Release, 1, type: 1), Is.EqualTo(Good));
        Assert.That(await WriteStatus(_c), Is.EqualTo(Good));
        Assert.That(await Out(_a, Reserve, 1, type: 3), Is.EqualTo(Good));
        Assert.That(await Out(_b, Clear, 2), Is.EqualTo(Good));
        Assert.That(_h.Lu.Reservations.Describe().Registrations, Is.Zero);
        Assert.That(await ReadStatus(_c), Is.EqualTo(Good));
    }

    [Test]
    public async Task Preempt_removes_the_holder_and_takes_the_reservation()
    {
        await Out(_a, Register, 0, 1);
        await Out(_b, Register, 0, 2);
        await Out(_a, Reserve, 1, type: 3);
        Assert.That(await Out(_b, Preempt, 2, saKey: 1, type: 3), Is.EqualTo(Good));
        Assert.That(await ReadStatus(_b), Is.EqualTo(Good));
        var ua = await _h.RunAsync([0, 0, 0, 0, 0, 0], nexus: _a);
        Assert.That(ScsiHarness.SenseOf(ua), Is.EqualTo((SenseKey.UnitAttention, (byte)0x2a, (byte)0x05)), "REGISTRATIONS PREEMPTED");
        Assert.That(await ReadStatus(_a), Is.EqualTo(Conflict), "preempted and unregistered");
        Assert.That(await Out(_a, Register, 1, 5), Is.EqualTo(Conflict), "its registration is gone");
    }

    [Test]
    public async Task Spc2_reserve_conflicts_for_other_sessions_until_released()
    {
        Assert.That((await _h.RunAsync([0x16, 0, 0, 0, 0, 0], nexus: _a)).Status, Is.EqualTo(Good));
        Assert.That(await ReadStatus(_b), Is.EqualTo(Conflict));
        Assert.That((await _h.RunAsync([0x16, 0, 0, 0, 0, 0], nexus: _b)).Status, Is.EqualTo(Conflict));
        Assert.That((await _h.RunAsync(Cdb.Inquiry(), nexus: _b)).Status, Is.EqualTo(Good), "INQUIRY is always allowed");
        Assert.That((await _h.RunAsync([0x17, 0, 0, 0, 0, 0], nexus: _a)).Status, Is.EqualTo(Good));
        Assert.That(await ReadStatus(_b), Is.EqualTo(Good));
    }

    [Test]
    public async Task Registrations_and_reservation_survive_a_restart()
    {
        await Out(_a, Register, 0, 0xabc);
        await Out(_b, Register, 0, 0xdef);
        await Out(_a, Reserve, 0xabc, type: 5);
        Assert.That(Directory.GetFiles(_h.StateDirectory!), Has.Length.EqualTo(1), "one file per LU, no temp file left");

        // A "restart": a new registry over the same state directory loads it on first use.
        var registry = new LogicalUnitRegistry(new Reservations.ReservationStore(_h.StateDirectory!), 8 << 20, NullLogger.Instance);
        var lu = registry.Get(_h.Volume);
        var (generation, registrations, type) = lu.Reservations.Describe();
        Assert.Multiple(() =>
        {
            Assert.That(registrations, Is.EqualTo(2));
            Assert.That(type, Is.EqualTo(Reservations.ReservationType.WriteExclusiveRegistrantsOnly));
            Assert.That(generation, Is.EqualTo(2u));
        });
        var outsider = new LunNexus(lu, 0, "iqn.2026-11.test:z,i,0x000009", "iqn.2026-11.io.ballast:v,t,0x0001", new object());
        var sameB = new LunNexus(lu, 0, "iqn.2026-11.test:b,i,0x000002", "iqn.2026-11.io.ballast:v,t,0x0001", new object());
        Assert.That(lu.Reservations.Conflicts(outsider, Reservations.ReservationClass.Write, 0x2a), Is.True);
        Assert.That(lu.Reservations.Conflicts(sameB, Reservations.ReservationClass.Write, 0x2a), Is.False, "a registrant, reconnected");
    }

    [Test]
    public async Task A_damaged_state_file_is_ignored()
    {
        await Out(_a, Register, 0, 1);
        var file = Directory.GetFiles(_h.StateDirectory!)[0];
        await File.WriteAllTextAsync(file, "ballast-pr 1\ngeneration 1\n");
        var registry = new LogicalUnitRegistry(new Reservations.ReservationStore(_h.StateDirectory!), 8 << 20, NullLogger.Instance);
        Assert.That(registry.Get(_h.Volume).Reservations.Describe().Registrations, Is.Zero);
    }

    [Test]
    public async Task Report_capabilities_lists_every_type()
    {
        var d = ScsiHarness.DataOf(await _h.RunAsync(Cdb.PrIn(2), readLength: 8));
        Assert.That(d[4], Is.EqualTo(0xea));
        Assert.That(d[5], Is.EqualTo(0x01));
    }
}
