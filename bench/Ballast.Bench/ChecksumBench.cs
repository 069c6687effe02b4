using System.Diagnostics;
using Ballast.Engine;

namespace Ballast.Bench;

/// <summary>
/// CRC32C throughput over 4 KiB blocks (how the engine checksums data): one crc32 chain per
/// block, as the engine did before, against <see cref="Crc32C"/> (four chains joined). Prints
/// both in GB/s and µs per MiB, best of five rounds.
/// </summary>
internal static class ChecksumBench
{
    public static int Run()
    {
        var data = new byte[1 << 20];
        new Random(1).NextBytes(data);
        const int Rounds = 2000;
        double serialBest = double.MaxValue, lanesBest = double.MaxValue;
        uint sink = 0;
        for (var round = 0; round < 5; round++)
        {
            var clock = Stopwatch.StartNew();
            for (var r = 0; r < Rounds; r++)
            {
                for (var b = 0; b < data.Length; b += 4096)
                {
                    sink ^= OneChain(data.AsSpan(b, 4096));
                }
            }
            serialBest = Math.Min(serialBest, clock.Elapsed.TotalSeconds);
            clock.Restart();
            for (var r = 0; r < Rounds; r++)
            {
                for (var b = 0; b < data.Length; b += 4096)
                {
                    sink ^= Crc32C.Compute(data.AsSpan(b, 4096));
                }
            }
            lanesBest = Math.Min(lanesBest, clock.Elapsed.TotalSeconds);
        }
        if (OneChain(data.AsSpan(0, 4096)) != Crc32C.Compute(data.AsSpan(0, 4096)))
        {
            Console.Error.WriteLine("the two CRCs differ");
            return 1;
        }
        static string Line(string name, double seconds) =>
            $"{name}: {Rounds / seconds / 1024:F1} GB/s, {seconds / Rounds * 1e6:F0} us per MiB";
        Console.WriteLine(Line("one chain per block ", serialBest));
        Console.WriteLine(Line("Crc32C (four chains)", lanesBest));
        Console.WriteLine($"speedup={serialBest / lanesBest:F2} (checksum {sink:x8})");
        return 0;
    }

    private static uint OneChain(ReadOnlySpan<byte> block) => ~Crc32C.UpdateSerial(~0u, block);
}
