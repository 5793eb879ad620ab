/// bench-image: how fast CheckpointImage writes and reads a memory image,
/// next to the `zstd` command line tool on the same bytes, in the same run.
///
/// What is measured
/// - The input is synthetic process memory, generated deterministically
///   (SplitMix64, fixed seed) and held in RAM: 4 KiB pages, 40% all-zero,
///   40% text-like (lines of words from a small vocabulary in varying order,
///   half of them starting like a recent line; ~3.6x alone with zstd -1),
///   20% random, interleaved in runs of 1-128 pages as in a heap.
///   Generating it is not timed. The same bytes are written to `DIR/raw.bin`,
///   which is what `zstd` compresses.
/// - write: `zstd -1 -T0 raw.bin -o raw.zst` against an ``ImageWriter`` that
///   writes a process section and one heap VMA covering all the pages
///   (``ImageWriter/appendPages(_:)`` in 16 MiB slices), then `finish()`.
///   The image is timed twice: to a file made atomically (`ImageOutput(path:)`,
///   whose commit fsyncs the file and its directory: what the library does)
///   and streamed to an already open file with no fsync (what zstd does).
/// - read: `zstd -d -T0 raw.zst -o raw.out` against restoring all the memory
///   from the image into a buffer of the full size: open an ``ImageReader``,
///   decompress every frame with ``ImageReader/frame(_:)``, copy each stored
///   page to its address, copy dedup pages and clear zero pages, as the page
///   map says. Once on one thread (the library's read path as it is), once
///   with the frames split across `activeProcessorCount` threads, each with
///   its own reader. The restored buffer is compared with the source after
///   each variant (not timed). zstd -d writes its output to a file (sparse
///   over zeros, into the page cache), so it is also timed writing to
///   /dev/null: decompression alone, a harder reference, reported for
///   information.
/// - size: the image file against `raw.zst`.
///
/// The measurements run round-robin, so that load from other processes on a
/// shared machine hits them alike: a warm-up round, then `--runs` rounds
/// (default 3); each one's best time counts. `sync` runs before each, so that
/// dirty pages left by an earlier step are not flushed inside a timed one.
/// The page cache is warm for every read (the machine's RAM holds all files).
/// Times are wall clock, including process start-up for zstd. MB/s is raw
/// (uncompressed) bytes, 10^6 per MB, over the time. The report says how much
/// CPU other processes took meanwhile (from /proc/stat): above a few percent,
/// the numbers are noisy.
///
/// The ratios are reported against the targets (write and read time ≤ 1.20×
/// zstd's, size ≤ 1.05× zstd -1's) as PASS or MISS; a miss does not fail the
/// program: it exits 0 unless something breaks (an error, a restore that
/// differs from the source).
///
/// Usage: bench-image --dir DIR [--size MiB] [--runs N] [--mix ZERO,TEXT,RANDOM] [--keep]
import LinuxKernel

do {
    try runBenchmark(try Options.parse(Array(CommandLine.arguments.dropFirst())))
} catch {
    log("bench-image: error: \(error)")
    Host.exit(1)
}
