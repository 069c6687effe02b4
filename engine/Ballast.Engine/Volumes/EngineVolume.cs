using System.Buffers;
using System.Runtime.CompilerServices;
using Ballast.Engine.Async;
using Ballast.Engine.Log;
using Ballast.Engine.Maps;

namespace Ballast.Engine.Volumes;

/// <summary>
/// A volume (or read-only snapshot) of a pool, served to frontends as an <see cref="IBlockVolume"/>.
/// Whole-block writes go straight to the appender; sub-block writes are merged with the current
/// block contents inside the engine (read-modify-write) behind the volume's <see cref="WriteGate"/>.
/// Reads resolve the map under the volume lock and read data blocks with O_DIRECT, checking
/// every block's CRC32C: a block that fails is an I/O error, never wrong data.
/// </summary>
public sealed partial class EngineVolume : IBlockVolume
{
    private static readonly ReadOnlyMemory<byte> ZeroBlock = new byte[PoolLayout.BlockSize];
    private readonly Pool _pool;
    private readonly VolumeState _state;

    internal EngineVolume(Pool pool, VolumeState state)
    {
        _pool = pool;
        _state = state;
    }

    internal VolumeState State => _state;
    public string Name => _state.Name;
    public Guid Uid => _state.Meta.Uid;
    public long Size => Volatile.Read(ref _state.Size);
    public int LogicalBlockSize => _state.Meta.LogicalBlockSize;
    public bool IsSnapshot => _state.IsSnapshot;
    public bool IsDeleted => _state.Deleted;
    public long Lsn => Volatile.Read(ref _state.AppliedLsn);
    public uint Epoch => _state.Epoch;
    public VolumeCounters Counters => _state.Counters;

    public VolumeFeatures Features => (_state.IsReadOnly ? VolumeFeatures.ReadOnly : VolumeFeatures.Trim | VolumeFeatures.WriteZeroes | VolumeFeatures.FastZero)
        | VolumeFeatures.MultiConnection | VolumeFeatures.AllocationStatus;

    // Device reads one read request keeps started ahead: enough for the disk's random-read rate
    // (it needs ~32 in flight, and clients send several requests at once), few enough that one
    // request cannot fill the shared io_uring (256) and push other volumes' reads to the queue
    // of the blocking-read threads.
    private const int PiecesInFlight = 16;

    private int MaxRecordBlocks => Math.Min(256, _pool.Appender.MaxBatchBlocks);

    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) => ReadAsync(offset, destination, inline: false);

    public ValueTask ReadInlineAsync(long offset, Memory<byte> destination) => ReadAsync(offset, destination, inline: true);

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask ReadAsync(long offset, Memory<byte> destination, bool inline)
    {
        CheckRange(offset, destination.Length);
        if (destination.Length == 0)
        {
            return;
        }
        var c = _state.Counters;
        var start = Begin(c);
        try
        {
            await ReadBlocksAsync(offset, destination, inline).ConfigureAwait(false);
        }
        catch
        {
            Interlocked.Increment(ref c.Errors);
            throw;
        }
        finally
        {
            End(c, c.ReadLatency, start);
        }
        Interlocked.Increment(ref c.Reads);
        Interlocked.Add(ref c.ReadBytes, destination.Length);
    }

    private static long Begin(VolumeCounters c)
    {
        Interlocked.Increment(ref c.InFlight);
        return System.Diagnostics.Stopwatch.GetTimestamp();
    }

    private static void End(VolumeCounters c, LatencyHistogram h, long start)
    {
        h.RecordSince(start);
        Interlocked.Decrement(ref c.InFlight);
    }

    /// <summary>Reads without the client range check (RMW reads the whole last block, which may pass the volume end).</summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask ReadBlocksAsync(long offset, Memory<byte> dst, bool inline = false)
    {
        var epoch = _pool.Epoch.Enter();
        var scratch = _pool.Scratch.Rent();
        try
        {
            var end = offset + dst.Length;
            var block = offset >> PoolLayout.BlockShift;
            var endBlock = (end + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift;
            while (block < endBlock)
            {
                var want = (int)Math.Min(endBlock - block, ReadScratch.BufferBlocks);
                int count, covered;
                lock (_state.Lock)
                {
                    // After a delete the cleaner may hand this volume's blocks to other writes:
                    // a handle kept past the delete must not read them (readers that resolved
                    // before it are waited for, being inside the epoch).
                    if (_state.Deleted)
                    {
                        throw new BlockVolumeException(BlockError.Gone, $"volume {Name} was deleted");
                    }
                    count = _state.Map.Resolve(block, want, scratch.Pieces, out covered);
                }
                // The next pieces' device reads start before the one in hand is awaited: a volume
                // written at random is read back as many small pieces, and one at a time they
                // would queue one deep on the device (a 1 MiB read of 4 KiB pieces took 256
                // device round trips). Pieces are still finished in order, so the first that
                // fails (I/O error or checksum) is the error, as when they were read one by one.
                Exception? failure = null;
                var failedAt = count;
                var started = 0;
                var startBlock = block;
                var doneBlock = block;
                for (var i = 0; i < count; i++)
                {
                    while (failure == null && started < count && started - i < PiecesInFlight)
                    {
                        try
                        {
                            StartPiece(scratch, block, startBlock, started, offset, dst, inline);
                        }
                        catch (Exception e)
                        {
                            (failure, failedAt) = (AsVolumeError(e, startBlock), started);
                            break;
                        }
                        startBlock += scratch.Pieces[started].Count;
                        started++;
                    }
                    if (i >= started)
                    {
                        break;
                    }
                    if (scratch.Pieces[i].Kind == ExtentKind.Data)
                    {
                        // Every started read is awaited, failed or not: the scratch buffer goes
                        // back to the pool below, and no read may still be filling it then.
                        try
                        {
                            await scratch.Reads[i].ConfigureAwait(false);
                            if (i < failedAt)
                            {
                                FinishPiece(scratch, block, doneBlock, i, offset, dst);
                            }
                        }
                        catch (Exception e) when (i < failedAt)
                        {
                            (failure, failedAt) = (AsVolumeError(e, doneBlock), i);
                        }
                        catch (Exception)
                        {
                            // A later piece than the one that already failed: not the error.
                        }
                        scratch.Reads[i] = default;
                    }
                    doneBlock += scratch.Pieces[i].Count;
                }
                if (failure != null)
                {
                    System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
                }
                block += covered;
            }
        }
        finally
        {
            _pool.Scratch.Return(scratch);
            _pool.Epoch.Exit(epoch);
        }
    }

    /// <summary>
    /// Starts the device read of piece <paramref name="i"/> (at block <paramref name="b"/>) into
    /// <see cref="ReadScratch.Reads"/>, or clears its target if it holds no data. A piece goes
    /// straight into the destination when it fills its slice of aligned memory, else into the
    /// scratch buffer at its own offset from <paramref name="block"/>, so the pieces of one
    /// resolve never share bytes.
    /// </summary>
    private void StartPiece(ReadScratch scratch, long block, long b, int i, long offset, Memory<byte> dst, bool inline)
    {
        var p = scratch.Pieces[i];
        var (target, buf, _) = Place(scratch, block, b, p, offset, dst);
        if (p.Kind == ExtentKind.Data)
        {
            // After the map was resolved, as ReadDataAsync needs.
            scratch.Reads[i] = _pool.ReadDataAsync(p.Phys, buf, inline);
        }
        else
        {
            target.Span.Clear();
        }
    }

    /// <summary>Checks a data piece that was read and copies it to the destination if it was read into scratch.</summary>
    private void FinishPiece(ReadScratch scratch, long block, long b, int i, long offset, Memory<byte> dst)
    {
        var p = scratch.Pieces[i];
        var (target, buf, direct) = Place(scratch, block, b, p, offset, dst);
        var pieceStart = b << PoolLayout.BlockShift;
        Verify(buf.Span, p.Phys, pieceStart);
        if (!direct)
        {
            var from = Math.Max(offset, pieceStart);
            buf.Span.Slice((int)(from - pieceStart), target.Length).CopyTo(target.Span);
        }
    }

    /// <summary>Where piece <paramref name="p"/> (starting at block <paramref name="b"/>) lands in the destination, and the buffer its device read fills.</summary>
    private static (Memory<byte> Target, Memory<byte> Buffer, bool Direct) Place(ReadScratch scratch, long block, long b, in MapPiece p, long offset, Memory<byte> dst)
    {
        var end = offset + dst.Length;
        var pieceStart = b << PoolLayout.BlockShift;
        var from = Math.Max(offset, pieceStart);
        var to = Math.Min(end, (b + p.Count) << PoolLayout.BlockShift);
        var target = dst[(int)(from - offset)..(int)(to - offset)];
        var bytes = p.Count << PoolLayout.BlockShift;
        // A whole piece whose target is aligned memory is read straight into it (a large NBD
        // read's buffer), saving the copy out of the scratch buffer.
        var direct = to - from == bytes && Buffers.AlignedBuffer.IsAligned(target);
        var buf = direct ? target : scratch.Buffer.Memory.Slice((int)(b - block) << PoolLayout.BlockShift, bytes);
        return (target, buf, direct);
    }

    /// <summary>A device error reading the piece at block <paramref name="b"/> as the volume's I/O error; anything else as it is.</summary>
    private Exception AsVolumeError(Exception e, long b) => e is Storage.StorageException se
        ? new BlockVolumeException(BlockError.Io, $"volume {Name}: reading offset {b << PoolLayout.BlockShift} failed: {se.Message}", se)
        : e;

    private void Verify(ReadOnlySpan<byte> data, long phys, long volumeOffset)
    {
        for (var k = 0; k < data.Length >> PoolLayout.BlockShift; k++)
        {
            var block = data.Slice(k << PoolLayout.BlockShift, PoolLayout.BlockSize);
            if (!_pool.Segments.TryGetCrc(phys + k, out var expected) || Crc32C.Compute(block) != expected)
            {
                Interlocked.Increment(ref _state.Counters.ChecksumErrors);
                var message = $"volume {Name}: the block at offset {volumeOffset + ((long)k << PoolLayout.BlockShift)} failed its checksum (pool block {phys + k}); its data is damaged";
                _pool.Report(PoolLogLevel.Error, message);
                throw new BlockVolumeException(BlockError.Io, message);
            }
        }
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags, CancellationToken cancellationToken = default)
    {
        CheckWritable();
        CheckRange(offset, source.Length);
        if (source.Length == 0)
        {
            return;
        }
        var c = _state.Counters;
        var start = Begin(c);
        try
        {
            await WriteCoreAsync(offset, source, flags, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Interlocked.Increment(ref c.Errors);
            throw;
        }
        finally
        {
            End(c, c.WriteLatency, start);
        }
        Interlocked.Increment(ref c.Writes);
        Interlocked.Add(ref c.WriteBytes, source.Length);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags, CancellationToken cancellationToken)
    {
        if ((offset & (PoolLayout.BlockSize - 1)) == 0 && (source.Length & (PoolLayout.BlockSize - 1)) == 0)
        {
            await _state.Gate.EnterSharedAsync().ConfigureAwait(false);
            try
            {
                await AppendDataAsync(offset >> PoolLayout.BlockShift, source, flags).ConfigureAwait(false);
            }
            finally
            {
                _state.Gate.ExitShared();
            }
        }
        else
        {
            await _state.Gate.EnterExclusiveAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                // Its write follows reads that finish elsewhere: neither inline nor alone by then.
                await ReadModifyWriteAsync(offset, source, flags & ~(WriteFlags.CompleteInline | WriteFlags.Alone)).ConfigureAwait(false);
            }
            finally
            {
                _state.Gate.ExitExclusive();
            }
        }
    }

    /// <summary>Appends whole blocks, split into records the appender can batch; chunks go out together.</summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask AppendDataAsync(long block, ReadOnlyMemory<byte> data, WriteFlags flags)
    {
        var blocks = data.Length >> PoolLayout.BlockShift;
        var max = MaxRecordBlocks;
        if (blocks <= max)
        {
            await SubmitAsync(RecordKind.Data, block, blocks, data, flags).ConfigureAwait(false);
            return;
        }
        var chunks = (blocks + max - 1) / max;
        var pending = ArrayPool<ValueTask>.Shared.Rent(Math.Min(chunks, 16));
        try
        {
            var done = 0;
            while (done < blocks)
            {
                var n = 0;
                for (; n < pending.Length && done < blocks; n++)
                {
                    var c = Math.Min(max, blocks - done);
                    pending[n] = SubmitAsync(RecordKind.Data, block + done, c, data.Slice(done << PoolLayout.BlockShift, c << PoolLayout.BlockShift), flags);
                    done += c;
                }
                Exception? failure = null;
                for (var i = 0; i < n; i++)
                {
                    try
                    {
                        await pending[i].ConfigureAwait(false);
                    }
                    catch (Exception e)
                    {
                        failure ??= e;
                    }
                }
                if (failure != null)
                {
                    throw failure;
                }
            }
        }
        finally
        {
            ArrayPool<ValueTask>.Shared.Return(pending, clearArray: true);
        }
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask SubmitAsync(RecordKind kind, long lba, int blocks, ReadOnlyMemory<byte> payload, WriteFlags flags)
    {
        var appender = _pool.Appender;
        var r = RentRecord(kind, lba, blocks, payload, (flags & WriteFlags.Fua) != 0 ? RecordFlags.Fua : RecordFlags.None);
        r.CompleteInline = (flags & WriteFlags.CompleteInline) != 0;
        r.Alone = (flags & WriteFlags.Alone) != 0;
        ValueTask replicas;
        Exception? local = null;
        try
        {
            await appender.SubmitAsync(r).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            local = e;
        }
        finally
        {
            replicas = r.ReplicaWait;
            r.ReplicaWait = default;
            appender.Return(r);
        }
        if (local != null)
        {
            // A record forwarded before the local write failed still points at the caller's
            // buffer: the caller may reuse it only once the replicas are done with it.
            try
            {
                await replicas.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The local failure is the one reported.
            }
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(local);
        }
        // A replicated record completes when the replicas have it too (the payload stays valid until then).
        await replicas.ConfigureAwait(false);
    }

    /// <summary>An append request for one record of this volume; data records carry their payload and a CRC per block.</summary>
    private AppendRequest RentRecord(RecordKind kind, long lba, int blocks, ReadOnlyMemory<byte> payload, RecordFlags flags)
    {
        var r = _pool.Appender.Rent();
        r.Desc.Kind = kind;
        r.Desc.Lba = lba;
        r.Desc.BlockCount = blocks;
        r.Desc.Flags = flags;
        r.Volume = _state;
        r.UseReserve = kind != RecordKind.Data;
        if (kind == RecordKind.Data)
        {
            r.Payload = payload;
            var span = payload.Span;
            for (var i = 0; i < blocks; i++)
            {
                r.Crcs[i] = Crc32C.Compute(span.Slice(i << PoolLayout.BlockShift, PoolLayout.BlockSize));
            }
        }
        return r;
    }

    /// <summary>Sub-block write: reads the partial edge blocks, overlays the new bytes, appends whole blocks.</summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask ReadModifyWriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags)
    {
        var end = offset + source.Length;
        var alignedStart = offset & ~(long)(PoolLayout.BlockSize - 1);
        var alignedEnd = (end + PoolLayout.BlockSize - 1) & ~(long)(PoolLayout.BlockSize - 1);
        var chunkBytes = (long)MaxRecordBlocks << PoolLayout.BlockShift;
        var scratch = _pool.Scratch.Rent();
        try
        {
            for (var chunkStart = alignedStart; chunkStart < alignedEnd; chunkStart += chunkBytes)
            {
                var chunkEnd = Math.Min(alignedEnd, chunkStart + chunkBytes);
                var buf = scratch.Buffer.Memory[..(int)(chunkEnd - chunkStart)];
                if (chunkStart < offset)
                {
                    await ReadBlocksAsync(chunkStart, buf[..PoolLayout.BlockSize]).ConfigureAwait(false);
                }
                if (chunkEnd > end && chunkEnd - PoolLayout.BlockSize >= offset)
                {
                    await ReadBlocksAsync(chunkEnd - PoolLayout.BlockSize, buf[^PoolLayout.BlockSize..]).ConfigureAwait(false);
                }
                var from = Math.Max(offset, chunkStart);
                var to = Math.Min(end, chunkEnd);
                source.Slice((int)(from - offset), (int)(to - from)).CopyTo(buf[(int)(from - chunkStart)..]);
                await SubmitAsync(RecordKind.Data, chunkStart >> PoolLayout.BlockShift, buf.Length >> PoolLayout.BlockShift, buf, flags).ConfigureAwait(false);
            }
        }
        finally
        {
            _pool.Scratch.Return(scratch);
        }
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken = default) => FlushAsync(inline: false, drainAtBatchEnd: false, cancellationToken);

    // Implements IBlockVolume's member, whose default (a plain FlushAsync) would complete every
    // frontend's flush through the thread pool: keep the signature exactly.
    public ValueTask FlushInlineAsync() => FlushAsync(inline: true, drainAtBatchEnd: false, default);

    /// <summary>A replica's FLUSH, from a receive loop that holds a completion batch open (see <see cref="ApplyReplicatedAsync"/>).</summary>
    internal ValueTask FlushInlineAtBatchEndAsync() => FlushAsync(inline: true, drainAtBatchEnd: true, default);

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask FlushAsync(bool inline, bool drainAtBatchEnd, CancellationToken cancellationToken)
    {
        var appender = _pool.Appender;
        var r = appender.Rent();
        r.Op = AppendOp.Flush;
        r.CompleteInline = inline;
        r.DrainAtBatchEnd = drainAtBatchEnd;
        var c = _state.Counters;
        var start = Begin(c);
        try
        {
            // Replicas flush in parallel: the FLUSH follows every record already forwarded to them.
            var replicas = _state.Forwarder is { } f ? f.FlushAsync(inline, cancellationToken) : default;
            await appender.SubmitAsync(r).ConfigureAwait(false);
            await replicas.ConfigureAwait(false);
        }
        catch
        {
            Interlocked.Increment(ref c.Errors);
            throw;
        }
        finally
        {
            appender.Return(r);
            End(c, c.FlushLatency, start);
        }
        Interlocked.Increment(ref c.Flushes);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    public async ValueTask TrimAsync(long offset, long length, CancellationToken cancellationToken = default)
    {
        await MeasuredClearAsync(offset, length, RecordKind.Trim, cancellationToken).ConfigureAwait(false);
        Interlocked.Increment(ref _state.Counters.Trims);
        Interlocked.Add(ref _state.Counters.TrimBytes, length);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    public async ValueTask WriteZeroesAsync(long offset, long length, bool mayDeallocate, CancellationToken cancellationToken = default)
    {
        await MeasuredClearAsync(offset, length, mayDeallocate ? RecordKind.Trim : RecordKind.Zero, cancellationToken).ConfigureAwait(false);
        Interlocked.Increment(ref _state.Counters.Zeroes);
        Interlocked.Add(ref _state.Counters.ZeroBytes, length);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask MeasuredClearAsync(long offset, long length, RecordKind kind, CancellationToken ct)
    {
        var c = _state.Counters;
        var start = Begin(c);
        try
        {
            await ClearAsync(offset, length, kind, ct).ConfigureAwait(false);
        }
        catch
        {
            Interlocked.Increment(ref c.Errors);
            throw;
        }
        finally
        {
            End(c, c.TrimLatency, start);
        }
    }

    /// <summary>
    /// Trim or zero: whole blocks become metadata-only records (no data stored); partial edge
    /// blocks get zeroes written into them, so the range always reads back as zeroes.
    /// </summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask ClearAsync(long offset, long length, RecordKind kind, CancellationToken ct)
    {
        CheckWritable();
        CheckRange(offset, length);
        if (length == 0)
        {
            return;
        }
        var end = offset + length;
        var fullStart = (offset + PoolLayout.BlockSize - 1) & ~(long)(PoolLayout.BlockSize - 1);
        var fullEnd = end & ~(long)(PoolLayout.BlockSize - 1);
        var partial = fullStart > fullEnd || offset != fullStart || end != fullEnd;
        if (partial)
        {
            await _state.Gate.EnterExclusiveAsync(ct).ConfigureAwait(false);
        }
        else
        {
            await _state.Gate.EnterSharedAsync().ConfigureAwait(false);
        }
        try
        {
            if (fullStart > fullEnd)
            {
                // Inside one block.
                await ReadModifyWriteAsync(offset, ZeroBlock[..(int)length], WriteFlags.None).ConfigureAwait(false);
                return;
            }
            if (offset < fullStart)
            {
                await ReadModifyWriteAsync(offset, ZeroBlock[..(int)(fullStart - offset)], WriteFlags.None).ConfigureAwait(false);
            }
            for (var b = fullStart >> PoolLayout.BlockShift; b < fullEnd >> PoolLayout.BlockShift;)
            {
                var n = (int)Math.Min(1 << 30, (fullEnd >> PoolLayout.BlockShift) - b);
                await SubmitAsync(kind, b, n, default, WriteFlags.None).ConfigureAwait(false);
                b += n;
            }
            if (end > fullEnd)
            {
                await ReadModifyWriteAsync(fullEnd, ZeroBlock[..(int)(end - fullEnd)], WriteFlags.None).ConfigureAwait(false);
            }
        }
        finally
        {
            if (partial)
            {
                _state.Gate.ExitExclusive();
            }
            else
            {
                _state.Gate.ExitShared();
            }
        }
    }

    /// <summary>
    /// Runs a size change with the volume's writes held back. When shrinking to a size inside a
    /// 4 KiB block, the bytes of that block beyond the new end are zeroed first, so growing
    /// again later exposes zeroes, not old data.
    /// </summary>
    internal async Task ResizeAsync(long newSize, Func<Task> logResize)
    {
        await _state.Gate.EnterExclusiveAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            var old = Size;
            var tailEnd = Math.Min(old, (newSize + PoolLayout.BlockSize - 1) & ~(long)(PoolLayout.BlockSize - 1));
            if (newSize < old && tailEnd > newSize)
            {
                await ReadModifyWriteAsync(newSize, ZeroBlock[..(int)(tailEnd - newSize)], WriteFlags.None).ConfigureAwait(false);
            }
            await logResize().ConfigureAwait(false);
        }
        finally
        {
            _state.Gate.ExitExclusive();
        }
    }

    /// <summary>True if any byte at or beyond <paramref name="offset"/> may be non-zero.</summary>
    internal async Task<bool> HasDataFromAsync(long offset)
    {
        bool mapped;
        lock (_state.Lock)
        {
            mapped = _state.Map.HasContentFrom((offset + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift);
        }
        if (mapped)
        {
            return true;
        }
        var within = (int)(offset & (PoolLayout.BlockSize - 1));
        if (within == 0 || offset >= Size)
        {
            return false;
        }
        var block = new byte[PoolLayout.BlockSize];
        await ReadBlocksAsync(offset - within, block).ConfigureAwait(false);
        return block.AsSpan(within).ContainsAnyExcept((byte)0);
    }

    public int GetAllocation(long offset, long length, Span<AllocationRange> ranges)
    {
        CheckRange(offset, length);
        var end = offset + length;
        var block = offset >> PoolLayout.BlockShift;
        var endBlock = (end + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift;
        Span<MapPiece> pieces = stackalloc MapPiece[64];
        var n = 0;
        while (block < endBlock)
        {
            int count, covered;
            lock (_state.Lock)
            {
                count = _state.Map.Resolve(block, (int)Math.Min(endBlock - block, 1 << 30), pieces, out covered);
            }
            var b = block;
            for (var i = 0; i < count; i++)
            {
                var p = pieces[i];
                var state = p.Kind switch
                {
                    ExtentKind.Data => AllocationState.Data,
                    ExtentKind.Zero => AllocationState.Zero,
                    _ => AllocationState.Hole,
                };
                var from = Math.Max(offset, b << PoolLayout.BlockShift);
                var to = Math.Min(end, (b + p.Count) << PoolLayout.BlockShift);
                b += p.Count;
                if (n > 0 && ranges[n - 1].State == state && ranges[n - 1].Offset + ranges[n - 1].Length == from)
                {
                    ranges[n - 1] = ranges[n - 1] with { Length = to - ranges[n - 1].Offset };
                    continue;
                }
                if (n == ranges.Length)
                {
                    return n;
                }
                ranges[n++] = new AllocationRange(from, to - from, state);
            }
            block += covered;
        }
        return n;
    }

    /// <summary>Extents changed after <paramref name="sinceLsn"/> (data, zero or hole), in offset order.</summary>
    public IReadOnlyList<ChangedExtent> GetChangedExtents(long sinceLsn)
    {
        var list = new List<ChangedExtent>();
        lock (_state.Lock)
        {
            var size = _state.Size;
            _state.Map.Visit(0, _state.Map.CapacityBlocks, sinceLsn, (in ExtentMap.MapPieceInfo p) =>
            {
                var from = p.Block << PoolLayout.BlockShift;
                var to = Math.Min(size, (p.Block + p.Count) << PoolLayout.BlockShift);
                if (from >= to)
                {
                    return;
                }
                var state = p.Kind switch
                {
                    ExtentKind.Data => AllocationState.Data,
                    ExtentKind.Zero => AllocationState.Zero,
                    _ => AllocationState.Hole,
                };
                if (list.Count > 0 && list[^1].State == state && list[^1].Offset + list[^1].Length == from)
                {
                    list[^1] = list[^1] with { Length = to - list[^1].Offset, Lsn = Math.Max(list[^1].Lsn, p.Lsn) };
                }
                else
                {
                    list.Add(new ChangedExtent(from, to - from, state, p.Lsn));
                }
            });
        }
        return list;
    }

    private void CheckWritable()
    {
        if (_state.Fenced)
        {
            throw new BlockVolumeException(BlockError.Fenced, $"volume {Name}: another node is its primary now; this copy no longer takes writes");
        }
        if (_state.IsReadOnly)
        {
            throw new BlockVolumeException(BlockError.ReadOnly, $"{(IsSnapshot ? "snapshot" : "volume")} {Name} is read-only");
        }
        if (_state.Deleted)
        {
            throw new BlockVolumeException(BlockError.Gone, $"volume {Name} was deleted");
        }
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0)
        {
            throw new BlockVolumeException(BlockError.InvalidArgument, $"negative offset or length ({offset}, {length})");
        }
        if (offset > long.MaxValue - length)
        {
            throw new BlockVolumeException(BlockError.Overflow, $"offset {offset} + length {length} overflows");
        }
        if (offset + length > Size)
        {
            throw new BlockVolumeException(BlockError.OutOfRange, $"range {offset}+{length} is beyond the end of {Name} ({Size} bytes)");
        }
    }

    public override string ToString() => Name;
}

/// <summary>A range that changed after some LSN: the unit of resync and incremental backup.</summary>
public readonly record struct ChangedExtent(long Offset, long Length, AllocationState State, long Lsn);
