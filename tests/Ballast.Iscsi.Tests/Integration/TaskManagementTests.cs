using Ballast.Iscsi.Tests.Support;
using static Ballast.Iscsi.Tests.Support.RawInitiator;

namespace Ballast.Iscsi.Tests.Integration;

/// <summary>Task management over the wire (RFC 7143 §11.5): aborts, resets and their unit attentions.</summary>
[CancelAfter(60_000)]
public class TaskManagementTests
{
    private static async Task<byte> TmfAsync(RawInitiator c, byte function, uint refItt = 0xffffffff, uint refCmdSn = 0, ulong lun = 0)
    {
        var h = Header(0x42, (byte)(0x80 | function));
        BitConverterBigEndian(h, lun);
        Put32(h, 16, c.NextItt());
        Put32(h, 20, refItt);
        Put32(h, 24, c.CmdSn);
        Put32(h, 32, refCmdSn);
        await c.SendAsync(h);
        while (true)
        {
            var r = await c.ReadAsync() ?? throw new IOException("closed");
            if ((r.Header[0] & 0x3f) == 0x22)
            {
                return r.Header[2];
            }
        }
    }

    private static void BitConverterBigEndian(byte[] h, ulong lun) => System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), lun);

    [Test]
    public async Task Abort_task_of_a_write_waiting_for_data_drops_it_and_its_data_is_rejected()
    {
        await using var f = await TargetFixture.StartAsync();
        await using var c = await f.LoginToNewVolumeAsync("tmf", 16L << 20, 512);
        var h = Header(0x01, 0xa1);
        var itt = c.NextItt();
        var cmdSn = c.CmdSn++;
        Put32(h, 16, itt);
        Put32(h, 20, 8192);
        Put32(h, 24, cmdSn);
        Cdb.Write10(0, 16).CopyTo(h, 32);
        await c.SendAsync(h);
        var r2t = await c.ReadAsync();
        Assert.That(r2t!.Value.Header[0] & 0x3f, Is.EqualTo(0x31));
        Assert.That(await TmfAsync(c, 1, itt, cmdSn), Is.Zero, "function complete");
        var d = Header(0x05, 0x80, 8192);
        Put32(d, 16, itt);
        Put32(d, 20, Get32(r2t.Value.Header, 20));
        await c.SendAsync(d, new byte[8192]);
        var reject = await c.ReadAsync();
        Assert.That(reject!.Value.Header[0] & 0x3f, Is.EqualTo(0x3f), "no task any more: the data is rejected, no SCSI response comes");
        var tur = await c.CommandAsync([0, 0, 0, 0, 0, 0]);
        Assert.That(tur!.Status, Is.Zero);
    }

    [Test]
    public async Task Abort_task_of_a_finished_command_says_it_does_not_exist()
    {
        await using var f = await TargetFixture.StartAsync();
        await using var c = await f.LoginToNewVolumeAsync("tmf", 16L << 20, 512);
        var itt = 0x1001u + 1;
        var cmdSn = c.CmdSn;
        var r = await c.CommandAsync([0, 0, 0, 0, 0, 0]);
        Assert.That(r!.Status, Is.Zero);
        Assert.That(await TmfAsync(c, 1, itt, cmdSn), Is.EqualTo(1), "task does not exist");
        Assert.That(await TmfAsync(c, 4), Is.EqualTo(5), "CLEAR TASK SET: not supported");
        Assert.That(await TmfAsync(c, 8), Is.EqualTo(4), "TASK REASSIGN: allegiance reassignment not supported at ERL 0");
        Assert.That(await TmfAsync(c, 5, lun: 9UL << 48), Is.EqualTo(2), "LUN does not exist");
    }

    [Test]
    public async Task Lun_reset_raises_a_unit_attention_on_every_session()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("tmf", 16L << 20, 512);
        await using var a = await ConnectAsync(f.Port);
        await using var b = await ConnectAsync(f.Port);
        Assert.That(await a.LoginAsync(TargetFixture.Iqn("tmf"), "iqn.2026-11.test:a"), Is.Zero);
        Assert.That(await b.LoginAsync(TargetFixture.Iqn("tmf"), "iqn.2026-11.test:b"), Is.Zero);
        Assert.That(await TmfAsync(a, 5), Is.Zero);
        foreach (var c in new[] { a, b })
        {
            var r = await c.CommandAsync([0, 0, 0, 0, 0, 0]);
            Assert.That((r!.Status, r.SenseKey, r.Asc, r.Ascq), Is.EqualTo(((byte)2, (byte)6, (byte)0x29, (byte)0x03)), "BUS DEVICE RESET FUNCTION OCCURRED");
            Assert.That((await c.CommandAsync([0, 0, 0, 0, 0, 0]))!.Status, Is.Zero, "reported once");
        }
    }
}
