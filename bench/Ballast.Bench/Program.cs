using Ballast.Bench;

// Benchmarks that drive Ballast's own code in-process. bench/*.sh run them beside fio and peers.
return args.FirstOrDefault() switch
{
    "engine-randwrite" => await EngineBench.RandomWriteAsync(BenchArgs.Parse(args[1..])),
    "engine-wa" => await EngineBench.WriteAmplificationAsync(BenchArgs.Parse(args[1..])),
    "crc32c" => ChecksumBench.Run(),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("""
        usage: Ballast.Bench engine-randwrite --dir DIR [--volume-gib 2] [--pool-gib 8] [--seconds 30] [--qd 32] [--flush-every 32] [--recycle 1]
               Ballast.Bench engine-wa --dir DIR [--pool-mib 1024] [--fill 0.8] [--overwrites 3] [--segment-mib 0 (auto)]
                                          [--start-free 0.02] [--target-free 0.03] [--recycle 1]
               Ballast.Bench crc32c      (checksum throughput over 4 KiB blocks: one crc32 chain vs four)
        --recycle 0 turns slack-space recycling off (the cleaner copies to free whole segments).
        """);
    return 2;
}
