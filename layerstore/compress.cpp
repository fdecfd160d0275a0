#include "layerstore/compress.h"

#include <archive.h>
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <new>
#include <thread>
#include <tuple>
#include <vector>

#include "layerstore/errors.h"
#include "layerstore/files.h"

namespace kiln {
namespace {

// Sizes of the staging buffers between a codec and the stream on either side of it: large enough
// that per-call overhead vanishes, small enough that memory stays flat whatever the stream length.
constexpr size_t kStreamBufferSize = 256 << 10;

// pigz's defaults: 128 KiB blocks, each primed with the 32 KiB (deflate's whole window) before it,
// so splitting costs well under 1% of ratio against a single deflate stream.
constexpr size_t kGzipBlockSize = 128 << 10;
constexpr size_t kDeflateWindow = 32 << 10;
// ISA-L's level 1: on a 772 MB tarball from /usr it deflates at 511 MB/s on one core here against
// zlib level 4's 61 MB/s (pigz -p1 -4), for 8% more bytes (335 MB against 309); its levels 2 and 3
// cost 10% and 53% more time for 1% and 2% fewer bytes. Compression is most of a cold build's CPU,
// and a registry on the same network takes the extra bytes faster than zlib could save them.
constexpr int kGzipDefaultLevel = 1;
// zlib's level 4, when the bytes must not depend on the CPU: the last level before zlib's slow
// lazy matching, 1.25x faster than level 6 for 2.4% more bytes, and no larger than the layers
// skopeo and buildah write (klauspost's deflate at its default level).
constexpr int kGzipReproducibleLevel = 4;
constexpr int kZstdDefaultLevel = 3;

unsigned online_cores() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1;
}

unsigned thread_count(const CompressOptions& options) {
  if (options.threads < 0) throw InvalidInputError(fmt::format("invalid thread count {}", options.threads));
  // Beyond a few dozen workers the single writer thread is the bottleneck; cap to keep memory sane.
  return std::clamp(options.threads == 0 ? online_cores() : static_cast<unsigned>(options.threads), 1u, 64u);
}

// Tracks how much a decompressor has produced against how much it has consumed, and refuses a
// stream whose expansion gives it away as a decompression bomb.
class BombGuard {
 public:
  BombGuard(std::string_view format, const DecompressLimits& limits) : format_(format), limits_(limits) {}

  void check(uint64_t produced, uint64_t consumed) const {
    if (limits_.max_ratio <= 0 || produced <= limits_.grace_bytes) return;
    if (static_cast<double>(produced) <= limits_.max_ratio * static_cast<double>(consumed)) return;
    throw InvalidInputError(fmt::format("{}: decompression bomb: {} from {} exceeds the {}:1 limit", format_,
                                        human_size(produced), human_size(consumed), limits_.max_ratio));
  }

 private:
  std::string_view format_;
  DecompressLimits limits_;
};

// ---------------------------------------------------------------------------------------------------
// gzip compression, in parallel blocks

// One block of the input on its way through a worker. The block's raw deflate output is a valid
// continuation of the previous block's (it ends on a byte boundary with a sync flush and carries no
// final-block bit unless it is last), so the pieces concatenate into one deflate stream.
struct GzipBlock {
  std::unique_ptr<std::byte[]> input = std::make_unique_for_overwrite<std::byte[]>(kGzipBlockSize);
  size_t input_size = 0;
  std::unique_ptr<std::byte[]> dictionary = std::make_unique_for_overwrite<std::byte[]>(kDeflateWindow);
  size_t dictionary_size = 0;
  bool last = false;

  std::vector<std::byte> output;
  size_t output_size = 0;
  uLong crc = 0;
  bool done = false;
  std::exception_ptr error;
};

// Turns one block into raw deflate (no zlib or gzip wrapper: the compressor writes its own gzip
// framing). Each block is compressed from a fresh state, so the result depends on the block and its
// dictionary only, never on which thread ran it or what it ran before: that is what makes the output
// identical whatever the thread count.
class Deflater {
 public:
  virtual ~Deflater() = default;
  virtual void compress(GzipBlock& block) = 0;

 protected:
  // Grows the block's output buffer so that `produced` bytes are kept and more can follow.
  static void make_room(GzipBlock& block, size_t produced, size_t wanted) {
    if (block.output.size() < wanted) block.output.resize(wanted);
    if (produced == block.output.size()) block.output.resize(block.output.size() * 2);
  }
};

// zlib, for the levels where it compresses smaller than ISA-L (4 to 9) and for stored blocks (0).
class ZlibDeflater : public Deflater {
 public:
  explicit ZlibDeflater(int level) : level_(level) {
    init(stream_, level);
    if (level > 0) {
      init(stored_, 0);
      init(probe_, 1);
    }
  }
  ZlibDeflater(const ZlibDeflater&) = delete;
  ZlibDeflater& operator=(const ZlibDeflater&) = delete;
  ~ZlibDeflater() override {
    deflateEnd(&stream_);
    if (level_ > 0) {
      deflateEnd(&stored_);
      deflateEnd(&probe_);
    }
  }

  void compress(GzipBlock& block) override {
    // Layers often hold data that is already compressed (archives, media, binaries' packed
    // sections). Deflating it costs ~3x the time of deflating text and saves nothing,
    // so such blocks are stored instead, as fast deflaters (klauspost's, which skopeo uses) do.
    // The decision depends only on the block's bytes, so the output stays deterministic.
    z_stream& stream = looks_incompressible(block) ? stored_ : stream_;
    compress_with(stream, block);
  }

 private:
  static void init(z_stream& stream, int level) {
    int rc = deflateInit2(&stream, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    if (rc != Z_OK) throw Error(fmt::format("gzip: deflateInit2 failed ({})", rc));
  }

  // Deflates three samples (start, middle, end) at the fastest level; if they do not shrink by at
  // least 1%, the block is taken for incompressible. Costs about a tenth of deflating the block.
  bool looks_incompressible(const GzipBlock& block) {
    constexpr size_t kSample = 4096;
    if (level_ == 0 || block.input_size < 8 * kSample) return false;
    const size_t offsets[] = {0, block.input_size / 2, block.input_size - kSample};
    size_t sampled_out = 0;
    for (size_t offset : offsets) {
      check(probe_, deflateReset(&probe_), "deflateReset");
      probe_.next_in = reinterpret_cast<Bytef*>(block.input.get() + offset);
      probe_.avail_in = kSample;
      probe_.next_out = probe_output_.data();
      probe_.avail_out = static_cast<uInt>(probe_output_.size());
      int rc = deflate(&probe_, Z_FINISH);
      if (rc != Z_STREAM_END) check(probe_, rc == Z_OK ? Z_BUF_ERROR : rc, "deflate");
      sampled_out += probe_output_.size() - probe_.avail_out;
    }
    return sampled_out * 100 >= 3 * kSample * 99;
  }

  void compress_with(z_stream& stream, GzipBlock& block) {
    check(stream, deflateReset(&stream), "deflateReset");
    // Stored blocks refer to nothing, so the dictionary would be wasted work.
    if (block.dictionary_size > 0 && &stream != &stored_) {
      check(stream,
            deflateSetDictionary(&stream, reinterpret_cast<const Bytef*>(block.dictionary.get()),
                                 static_cast<uInt>(block.dictionary_size)),
            "deflateSetDictionary");
    }
    // deflateBound covers a complete stream; the sync flush's empty stored block adds a few bytes.
    const size_t bound = deflateBound(&stream, static_cast<uLong>(block.input_size)) + 64;

    stream.next_in = reinterpret_cast<Bytef*>(block.input.get());
    stream.avail_in = static_cast<uInt>(block.input_size);
    size_t produced = 0;
    const int flush = block.last ? Z_FINISH : Z_SYNC_FLUSH;
    for (;;) {
      make_room(block, produced, bound);
      stream.next_out = reinterpret_cast<Bytef*>(block.output.data() + produced);
      stream.avail_out = static_cast<uInt>(block.output.size() - produced);
      int rc = deflate(&stream, flush);
      produced = block.output.size() - stream.avail_out;
      if (rc == Z_STREAM_END) break;
      if (rc != Z_OK && rc != Z_BUF_ERROR) check(stream, rc, "deflate");
      // A sync flush is complete once deflate returns with output space to spare.
      if (!block.last && stream.avail_in == 0 && stream.avail_out != 0) break;
    }
    block.output_size = produced;
  }

  static void check(const z_stream& stream, int rc, const char* what) {
    if (rc == Z_OK) return;
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    throw Error(fmt::format("gzip: {} failed: {}", what, stream.msg ? stream.msg : zError(rc)));
  }

  const int level_;
  z_stream stream_{};
  z_stream stored_{};  // level 0: stored blocks for incompressible input
  z_stream probe_{};   // level 1: samples a block to tell which of the two to use
  std::array<Bytef, 8192> probe_output_{};
};

// Intel ISA-L's igzip, for levels 1 to 3: hand-written SIMD deflate, 5 to 8 times zlib's speed at
// level 4 here for 2-8% more bytes. It stores incompressible blocks by itself, so it
// needs no probe. The output is standard deflate that every gzip reader takes.
class IsalDeflater : public Deflater {
 public:
  explicit IsalDeflater(int level)
      : level_(level),
        stream_(std::make_unique<isal_zstream>()),
        level_buffer_(std::make_unique_for_overwrite<uint8_t[]>(level_buffer_size(level))) {}

  void compress(GzipBlock& block) override {
    isal_zstream& s = *stream_;
    isal_deflate_init(&s);
    s.level = static_cast<uint32_t>(level_);
    s.level_buf = level_buffer_.get();
    s.level_buf_size = static_cast<uint32_t>(level_buffer_size(level_));
    s.gzip_flag = IGZIP_DEFLATE;
    if (block.dictionary_size > 0) {
      check(isal_deflate_set_dict(&s, reinterpret_cast<uint8_t*>(block.dictionary.get()),
                                  static_cast<uint32_t>(block.dictionary_size)),
            "isal_deflate_set_dict");
    }
    s.next_in = reinterpret_cast<uint8_t*>(block.input.get());
    s.avail_in = static_cast<uint32_t>(block.input_size);
    s.end_of_stream = block.last ? 1 : 0;
    s.flush = block.last ? NO_FLUSH : SYNC_FLUSH;
    // Stored blocks bound the output: 5 bytes of header per 64 KiB, plus the flush and Huffman tables.
    const size_t bound = block.input_size + block.input_size / 4096 + 1024;
    size_t produced = 0;
    for (;;) {
      make_room(block, produced, bound);
      s.next_out = reinterpret_cast<uint8_t*>(block.output.data() + produced);
      s.avail_out = static_cast<uint32_t>(block.output.size() - produced);
      check(isal_deflate(&s), "isal_deflate");
      const size_t before = produced;
      produced = block.output.size() - s.avail_out;
      // Done once all input is in and the sync flush (or the final block) is written out.
      const bool complete = block.last ? s.internal_state.state == ZSTATE_END
                                       : s.avail_in == 0 && s.internal_state.state == ZSTATE_NEW_HDR;
      if (complete) break;
      if (s.avail_out != 0 && produced == before && s.avail_in == 0) {
        throw Error("gzip: isal_deflate stopped before the end of its input");
      }
    }
    block.output_size = produced;
  }

 private:
  static size_t level_buffer_size(int level) {
    switch (level) {
      case 1:
        return ISAL_DEF_LVL1_DEFAULT;
      case 2:
        return ISAL_DEF_LVL2_DEFAULT;
      default:
        return ISAL_DEF_LVL3_DEFAULT;
    }
  }

  static void check(int rc, const char* what) {
    if (rc != COMP_OK) throw Error(fmt::format("gzip: {} failed ({})", what, rc));
  }

  const int level_;
  std::unique_ptr<isal_zstream> stream_;  // ~100 KiB of history and hash state: on the heap
  std::unique_ptr<uint8_t[]> level_buffer_;
};

std::unique_ptr<Deflater> make_deflater(int level) {
  if (level >= 1 && level <= ISAL_DEF_MAX_LEVEL) return std::make_unique<IsalDeflater>(level);
  return std::make_unique<ZlibDeflater>(level);
}

// The block's CRC-32 (gzip's), computed on the worker so the writer only combines them.
// ISA-L's folds with carry-less multiplication, several times zlib's table-driven loop.
uint32_t block_crc(const GzipBlock& block) {
  return crc32_gzip_refl(0, reinterpret_cast<const uint8_t*>(block.input.get()), block.input_size);
}

// Docker's gzip (Go's compress/gzip) layout: no name, mtime 0, OS "unknown". Leaving the time out
// is what makes a layer's digest reproducible.
std::array<std::byte, 10> gzip_header(int level) {
  // XFL: 2 for the slowest level, 4 for the fastest, as RFC 1952 and Go set it.
  const unsigned xfl = level == 9 ? 2 : level == 1 ? 4 : 0;
  return {std::byte{0x1f}, std::byte{0x8b}, std::byte{8}, std::byte{0},   std::byte{0},
          std::byte{0},    std::byte{0},    std::byte{0}, std::byte(xfl), std::byte{255}};
}

class GzipCompressor : public Writer {
 public:
  GzipCompressor(Writer& out, int level, unsigned threads)
      : out_(out), level_(level), max_in_flight_(2 * threads) {
    current_ = take_free_block();
    if (threads == 1) {
      inline_deflater_ = make_deflater(level_);
      return;
    }
    workers_.reserve(threads);
    try {
      for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
    } catch (...) {
      stop_workers();
      throw;
    }
  }

  GzipCompressor(const GzipCompressor&) = delete;
  GzipCompressor& operator=(const GzipCompressor&) = delete;

  // Unfinished output is abandoned, but the workers are always stopped and joined.
  ~GzipCompressor() override { stop_workers(); }

  void write(std::span<const std::byte> data) override {
    check_usable();
    while (!data.empty()) {
      if (current_->input_size == kGzipBlockSize) {
        // Only now, with more data coming, is the full block known not to be the last one.
        guarded([this] { submit_current(); });
      }
      size_t n = std::min(data.size(), kGzipBlockSize - current_->input_size);
      std::memcpy(current_->input.get() + current_->input_size, data.data(), n);
      current_->input_size += n;
      data = data.subspan(n);
    }
  }

  void finish() override {
    if (finished_) return;
    check_usable();
    guarded([this] {
      current_->last = true;
      submit_current();
      while (!in_flight_.empty()) emit_front(/*wait=*/true);
      std::array<std::byte, 8> trailer;
      put_le32(trailer.data(), static_cast<uint32_t>(crc_));
      put_le32(trailer.data() + 4, static_cast<uint32_t>(total_in_));  // ISIZE is the size mod 2^32
      out_.write(trailer);
      finished_ = true;
    });
  }

 private:
  static void put_le32(std::byte* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = std::byte((v >> (8 * i)) & 0xff);
  }

  void check_usable() const {
    if (broken_) throw Error("gzip: compressor used after an earlier error");
    if (finished_) throw Error("gzip: compressor used after finish()");
  }

  // Runs f and marks the compressor unusable if it throws: the stream has a hole in it by then.
  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (...) {
      broken_ = true;
      throw;
    }
  }

  std::unique_ptr<GzipBlock> take_free_block() {
    if (free_.empty()) return std::make_unique<GzipBlock>();
    auto block = std::move(free_.back());
    free_.pop_back();
    block->input_size = 0;
    block->dictionary_size = 0;
    block->last = false;
    block->done = false;
    block->error = nullptr;
    return block;
  }

  void submit_current() {
    std::unique_ptr<GzipBlock> next;
    if (!current_->last) {
      next = take_free_block();
      next->dictionary_size = std::min(current_->input_size, kDeflateWindow);
      std::memcpy(next->dictionary.get(),
                  current_->input.get() + current_->input_size - next->dictionary_size,
                  next->dictionary_size);
    }
    GzipBlock* block = current_.get();
    if (workers_.empty()) {
      inline_deflater_->compress(*block);
      block->crc = block_crc(*block);
      block->done = true;
      in_flight_.push_back(std::move(current_));
    } else {
      in_flight_.push_back(std::move(current_));
      {
        std::lock_guard lock(mutex_);
        pending_.push_back(block);
      }
      work_ready_.notify_one();
    }
    current_ = std::move(next);

    // Write out whatever is already done in order, then wait only if the pipeline is full.
    while (!in_flight_.empty() && emit_front(/*wait=*/in_flight_.size() >= max_in_flight_)) {
    }
  }

  // Writes the oldest in-flight block if it is done (or, with wait, once it is). Returns whether it
  // wrote one.
  bool emit_front(bool wait) {
    GzipBlock* front = in_flight_.front().get();
    {
      std::unique_lock lock(mutex_);
      if (wait) {
        block_done_.wait(lock, [front] { return front->done; });
      } else if (!front->done) {
        return false;
      }
    }
    // Done blocks belong to this thread alone: no worker looks at them again.
    if (front->error) std::rethrow_exception(front->error);
    if (!header_written_) {
      out_.write(gzip_header(level_));
      header_written_ = true;
    }
    out_.write(std::span(front->output).first(front->output_size));
    crc_ = crc32_combine(crc_, front->crc, static_cast<z_off_t>(front->input_size));
    total_in_ += front->input_size;
    free_.push_back(std::move(in_flight_.front()));
    in_flight_.pop_front();
    return true;
  }

  void work() {
    std::unique_ptr<Deflater> deflater;
    for (;;) {
      GzipBlock* block = nullptr;
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
        if (stopping_) return;
        block = pending_.front();
        pending_.pop_front();
      }
      std::exception_ptr error;
      try {
        if (!deflater) deflater = make_deflater(level_);
        deflater->compress(*block);
        block->crc = block_crc(*block);
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard lock(mutex_);
        block->error = error;
        block->done = true;
      }
      block_done_.notify_one();  // only the caller thread ever waits for a block
    }
  }

  void stop_workers() noexcept {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
    workers_.clear();
  }

  Writer& out_;
  const int level_;
  const size_t max_in_flight_;

  std::unique_ptr<GzipBlock> current_;            // being filled by write()
  std::vector<std::unique_ptr<GzipBlock>> free_;  // spent blocks, reused to avoid reallocating
  std::unique_ptr<Deflater> inline_deflater_;     // single-threaded mode compresses on the caller

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable block_done_;
  std::deque<std::unique_ptr<GzipBlock>> in_flight_;  // submitted, in stream order (caller thread only)
  std::deque<GzipBlock*> pending_;                    // submitted, not yet taken by a worker (locked)
  bool stopping_ = false;
  std::vector<std::thread> workers_;

  bool header_written_ = false;
  uLong crc_ = 0;
  uint64_t total_in_ = 0;
  bool finished_ = false;
  bool broken_ = false;
};

// ---------------------------------------------------------------------------------------------------
// zstd compression

class ZstdCompressor : public Writer {
 public:
  ZstdCompressor(Writer& out, int level, unsigned threads)
      : out_(out), ctx_(ZSTD_createCCtx()), buffer_(ZSTD_CStreamOutSize()) {
    if (!ctx_) throw std::bad_alloc();
    check(ZSTD_CCtx_setParameter(ctx_.get(), ZSTD_c_compressionLevel, level));
    check(ZSTD_CCtx_setParameter(ctx_.get(), ZSTD_c_checksumFlag, 1));
    // Even one thread goes through zstd's worker mode: multi-threaded output is the same for any
    // worker count but differs from the single-threaded mode, and a layer's digest must not depend
    // on the machine's core count. A libzstd built without threads refuses this; it then compresses
    // on the caller, which is still correct, so that error is deliberately ignored.
    (void)ZSTD_CCtx_setParameter(ctx_.get(), ZSTD_c_nbWorkers, static_cast<int>(threads));
  }

  void write(std::span<const std::byte> data) override {
    check_usable();
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) pump(in, ZSTD_e_continue);
  }

  void finish() override {
    if (finished_) return;
    check_usable();
    ZSTD_inBuffer in{nullptr, 0, 0};
    while (pump(in, ZSTD_e_end) != 0) {
    }
    finished_ = true;
  }

 private:
  struct CtxDeleter {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  };

  static size_t check(size_t rc) {
    if (ZSTD_isError(rc)) throw Error(fmt::format("zstd: compression failed: {}", ZSTD_getErrorName(rc)));
    return rc;
  }

  void check_usable() const {
    if (broken_) throw Error("zstd: compressor used after an earlier error");
    if (finished_) throw Error("zstd: compressor used after finish()");
  }

  size_t pump(ZSTD_inBuffer& in, ZSTD_EndDirective mode) {
    try {
      ZSTD_outBuffer out{buffer_.data(), buffer_.size(), 0};
      size_t remaining = check(ZSTD_compressStream2(ctx_.get(), &out, &in, mode));
      if (out.pos > 0) out_.write(std::span(buffer_).first(out.pos));
      return remaining;
    } catch (...) {
      broken_ = true;  // compressed bytes were lost: carrying on would write a stream with a hole
      throw;
    }
  }

  Writer& out_;
  std::unique_ptr<ZSTD_CCtx, CtxDeleter> ctx_;
  std::vector<std::byte> buffer_;
  bool finished_ = false;
  bool broken_ = false;
};

class PassThroughWriter : public Writer {
 public:
  explicit PassThroughWriter(Writer& out) : out_(out) {}
  void write(std::span<const std::byte> data) override { out_.write(data); }

 private:
  Writer& out_;
};

// ---------------------------------------------------------------------------------------------------
// Decompression

// Holds compressed input pulled from the source, and counts it for the bomb check.
class InputBuffer {
 public:
  explicit InputBuffer(Reader& in)
      : in_(in), data_(std::make_unique_for_overwrite<std::byte[]>(kStreamBufferSize)) {}

  // Moves unconsumed bytes to the front and reads more after them. Returns false at end of stream.
  bool refill(size_t unconsumed_offset, size_t unconsumed_size) {
    if (eof_) return false;
    if (unconsumed_size > 0 && unconsumed_offset > 0) {
      std::memmove(data_.get(), data_.get() + unconsumed_offset, unconsumed_size);
    }
    size_t n = in_.read(std::span(data_.get() + unconsumed_size, kStreamBufferSize - unconsumed_size));
    if (n == 0) eof_ = true;
    size_ = unconsumed_size + n;
    total_read_ += n;
    return n > 0;
  }

  std::byte* data() { return data_.get(); }
  size_t size() const { return size_; }
  bool eof() const { return eof_; }
  uint64_t total_read() const { return total_read_; }

 private:
  Reader& in_;
  std::unique_ptr<std::byte[]> data_;
  size_t size_ = 0;
  bool eof_ = false;
  uint64_t total_read_ = 0;
};

// gzip through ISA-L's inflate (2.5 times zlib's speed here), which reads the gzip header and checks
// the trailer's CRC and size itself.
class GzipDecompressor : public Reader {
 public:
  GzipDecompressor(Reader& in, const DecompressLimits& limits)
      : input_(in), bomb_("gzip", limits), state_(std::make_unique<inflate_state>()) {
    start_member();
  }

  size_t read(std::span<std::byte> buf) override {
    if (done_ || buf.empty()) return 0;
    inflate_state& s = *state_;
    s.next_out = reinterpret_cast<uint8_t*>(buf.data());
    s.avail_out = static_cast<uint32_t>(std::min<size_t>(buf.size(), UINT32_MAX));
    const uint32_t capacity = s.avail_out;
    while (s.avail_out == capacity) {
      if (s.block_state == ISAL_BLOCK_FINISH) {
        if (!next_member()) {
          done_ = true;
          break;
        }
        continue;
      }
      if (s.avail_in == 0 && !refill()) throw InvalidInputError("gzip: unexpected end of stream");
      const uint32_t in_before = s.avail_in;
      int rc = isal_inflate(&s);
      if (rc != ISAL_DECOMP_OK) throw InvalidInputError(fmt::format("gzip: corrupt data: {}", describe(rc)));
      if (s.avail_out == capacity && s.avail_in == in_before && s.block_state != ISAL_BLOCK_FINISH) {
        // Everything at hand is buffered inside the inflater: only more input can move it on.
        if (!refill()) throw InvalidInputError("gzip: unexpected end of stream");
      }
    }
    size_t produced = capacity - s.avail_out;
    total_out_ += produced;
    bomb_.check(total_out_, input_.total_read() - s.avail_in);
    return produced;
  }

 private:
  void start_member() {
    isal_inflate_init(state_.get());
    state_->crc_flag = ISAL_GZIP;  // parse the header, verify CRC-32 and ISIZE in the trailer
  }

  bool refill() {
    inflate_state& s = *state_;
    size_t offset = s.next_in == nullptr
                        ? 0
                        : static_cast<size_t>(reinterpret_cast<std::byte*>(s.next_in) - input_.data());
    bool more = input_.refill(offset, s.avail_in);
    s.next_in = reinterpret_cast<uint8_t*>(input_.data());
    s.avail_in = static_cast<uint32_t>(input_.size());
    return more;
  }

  // After a member ends, what follows must be another member or nothing: Docker reads gzip layers
  // as multistream, and anything else after the trailer is garbage a layer digest would not cover.
  bool next_member() {
    while (state_->avail_in < 2 && refill()) {
    }
    if (state_->avail_in == 0) return false;
    if (state_->avail_in < 2 || state_->next_in[0] != 0x1f || state_->next_in[1] != 0x8b) {
      throw InvalidInputError("gzip: trailing garbage after the compressed stream");
    }
    // A fresh state for the next member; init clears the buffers it is pointed at, so they are kept.
    inflate_state& s = *state_;
    const auto [next_in, avail_in, next_out, avail_out] =
        std::tuple(s.next_in, s.avail_in, s.next_out, s.avail_out);
    start_member();
    s.next_in = next_in;
    s.avail_in = avail_in;
    s.next_out = next_out;
    s.avail_out = avail_out;
    return true;
  }

  static std::string_view describe(int rc) {
    switch (rc) {
      case ISAL_INVALID_BLOCK:
        return "invalid deflate block";
      case ISAL_INVALID_SYMBOL:
        return "invalid code";
      case ISAL_INVALID_LOOKBACK:
        return "invalid distance too far back";
      case ISAL_INVALID_WRAPPER:
        return "incorrect header check";
      case ISAL_UNSUPPORTED_METHOD:
        return "unknown compression method";
      case ISAL_INCORRECT_CHECKSUM:
        return "incorrect data check";
      case ISAL_NEED_DICT:
        return "a preset dictionary is needed";
      default:
        return "inflate failed";
    }
  }

  InputBuffer input_;
  BombGuard bomb_;
  std::unique_ptr<inflate_state> state_;  // ~40 KiB of window and tables: on the heap
  uint64_t total_out_ = 0;
  bool done_ = false;
};

class ZstdDecompressor : public Reader {
 public:
  ZstdDecompressor(Reader& in, const DecompressLimits& limits)
      : input_(in), bomb_("zstd", limits), ctx_(ZSTD_createDCtx()) {
    if (!ctx_) throw std::bad_alloc();
  }

  size_t read(std::span<std::byte> buf) override {
    if (done_ || buf.empty()) return 0;
    ZSTD_outBuffer out{buf.data(), buf.size(), 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size) {
        if (!input_.refill(0, 0)) {
          // A clean end is one that falls exactly after a complete frame.
          if (!frame_complete_) throw InvalidInputError("zstd: unexpected end of stream");
          done_ = true;
          return 0;
        }
        in_ = ZSTD_inBuffer{input_.data(), input_.size(), 0};
      }
      size_t rc = ZSTD_decompressStream(ctx_.get(), &out, &in_);
      if (ZSTD_isError(rc))
        throw InvalidInputError(fmt::format("zstd: corrupt data: {}", ZSTD_getErrorName(rc)));
      frame_complete_ = rc == 0;
    }
    total_out_ += out.pos;
    bomb_.check(total_out_, input_.total_read() - (in_.size - in_.pos));
    return out.pos;
  }

 private:
  struct CtxDeleter {
    void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
  };

  InputBuffer input_;
  BombGuard bomb_;
  std::unique_ptr<ZSTD_DCtx, CtxDeleter> ctx_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  uint64_t total_out_ = 0;
  bool frame_complete_ = false;  // an empty stream holds no frame, so it counts as truncated
  bool done_ = false;
};

// bzip2 and xz only ever arrive from outside (kiln never writes them), so libarchive's filters,
// already linked for tar, decode them rather than two more libraries.
class ArchiveFilterDecompressor : public Reader {
 public:
  ArchiveFilterDecompressor(Reader& in, Compression c, const DecompressLimits& limits)
      : in_(in),
        name_(compression_name(c)),
        bomb_(name_, limits),
        buffer_(std::make_unique_for_overwrite<std::byte[]>(kStreamBufferSize)),
        archive_(archive_read_new()) {
    if (!archive_) throw std::bad_alloc();
    const int filter = c == Compression::Bzip2 ? ARCHIVE_FILTER_BZIP2 : ARCHIVE_FILTER_XZ;
    int rc = c == Compression::Bzip2 ? archive_read_support_filter_bzip2(archive_.get())
                                     : archive_read_support_filter_xz(archive_.get());
    // ARCHIVE_WARN means libarchive would shell out to an external program; kiln does not want that.
    if (rc != ARCHIVE_OK) throw Error(fmt::format("{}: not supported by this libarchive", name_));
    check(archive_read_support_format_raw(archive_.get()));
    check(archive_read_support_format_empty(archive_.get()));
    check(
        archive_read_open(archive_.get(), this, nullptr, &ArchiveFilterDecompressor::read_callback, nullptr));
    // With no filter recognising the data, the raw format would hand it back undecoded. A stream
    // that has the magic but ends before the filter could recognise it was cut short.
    if (archive_filter_code(archive_.get(), 0) != filter) {
      if (source_ended_ && detect_compression(std::span(head_).first(head_size_)) == c) {
        throw InvalidInputError(fmt::format("{}: unexpected end of stream", name_));
      }
      throw InvalidInputError(fmt::format("{}: not {}-compressed data", name_, name_));
    }
    // The empty format stands in for the raw one when the stream decompresses to nothing.
    archive_entry* entry = nullptr;
    rc = archive_read_next_header(archive_.get(), &entry);
    if (rc == ARCHIVE_EOF) {
      done_ = true;
    } else {
      check(rc);
    }
  }

  size_t read(std::span<std::byte> buf) override {
    if (done_ || buf.empty()) return 0;
    la_ssize_t n = archive_read_data(archive_.get(), buf.data(), buf.size());
    if (n < 0) fail();
    if (n == 0) {
      done_ = true;
      return 0;
    }
    total_out_ += static_cast<uint64_t>(n);
    bomb_.check(total_out_, consumed_);
    return static_cast<size_t>(n);
  }

 private:
  struct ArchiveDeleter {
    void operator()(archive* a) const { archive_read_free(a); }
  };

  static la_ssize_t read_callback(archive* a, void* self_ptr, const void** out) {
    auto* self = static_cast<ArchiveFilterDecompressor*>(self_ptr);
    // Exceptions must not unwind through libarchive's C frames: park it and report failure.
    try {
      size_t n = self->in_.read(std::span(self->buffer_.get(), kStreamBufferSize));
      if (n == 0) self->source_ended_ = true;
      self->consumed_ += n;
      size_t keep = std::min(n, self->head_.size() - self->head_size_);
      std::memcpy(self->head_.data() + self->head_size_, self->buffer_.get(), keep);
      self->head_size_ += keep;
      *out = self->buffer_.get();
      return static_cast<la_ssize_t>(n);
    } catch (...) {
      self->source_error_ = std::current_exception();
      archive_set_error(a, EIO, "read failed");
      return -1;
    }
  }

  void check(int rc) {
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) fail();
  }

  [[noreturn]] void fail() {
    if (source_error_) std::rethrow_exception(source_error_);
    const char* msg = archive_error_string(archive_.get());
    std::string detail = msg ? msg : "unknown error";
    // libarchive reports truncation in words of its own; kiln names it one way for every format.
    if (source_ended_)
      throw InvalidInputError(fmt::format("{}: unexpected end of stream ({})", name_, detail));
    throw InvalidInputError(fmt::format("{}: corrupt data: {}", name_, detail));
  }

  Reader& in_;
  std::string_view name_;
  BombGuard bomb_;
  std::unique_ptr<std::byte[]> buffer_;
  std::unique_ptr<archive, ArchiveDeleter> archive_;
  uint64_t consumed_ = 0;
  uint64_t total_out_ = 0;
  std::array<std::byte, 6> head_{};  // the first bytes read, to tell a cut-short stream from a foreign one
  size_t head_size_ = 0;
  bool source_ended_ = false;
  std::exception_ptr source_error_;
  bool done_ = false;
};

// A decompressor together with the PeekReader it reads from, whose sniffed head it sees first.
class SniffedReader : public Reader {
 public:
  SniffedReader(std::unique_ptr<PeekReader> peeked, Compression c, const DecompressLimits& limits)
      : peeked_(std::move(peeked)), decompressed_(make_decompressor(c, *peeked_, limits)) {}

  size_t read(std::span<std::byte> buf) override { return decompressed_->read(buf); }

 private:
  std::unique_ptr<PeekReader> peeked_;
  std::unique_ptr<Reader> decompressed_;
};

class PassThroughReader : public Reader {
 public:
  explicit PassThroughReader(Reader& in) : in_(in) {}
  size_t read(std::span<std::byte> buf) override { return in_.read(buf); }

 private:
  Reader& in_;
};

bool starts_with(std::span<const std::byte> head, std::initializer_list<unsigned> magic) {
  if (head.size() < magic.size()) return false;
  size_t i = 0;
  for (unsigned b : magic) {
    if (head[i++] != std::byte(b)) return false;
  }
  return true;
}

}  // namespace

std::string_view compression_name(Compression c) {
  switch (c) {
    case Compression::None:
      return "none";
    case Compression::Gzip:
      return "gzip";
    case Compression::Zstd:
      return "zstd";
    case Compression::Bzip2:
      return "bzip2";
    case Compression::Xz:
      return "xz";
  }
  return "unknown";
}

std::optional<Compression> parse_compression(std::string_view name) {
  if (name == "none" || name == "uncompressed") return Compression::None;
  if (name == "gzip") return Compression::Gzip;
  if (name == "zstd") return Compression::Zstd;
  return std::nullopt;
}

Compression detect_compression(std::span<const std::byte> head) {
  if (starts_with(head, {0x1f, 0x8b})) return Compression::Gzip;
  if (starts_with(head, {0x28, 0xb5, 0x2f, 0xfd})) return Compression::Zstd;
  if (starts_with(head, {'B', 'Z', 'h'})) return Compression::Bzip2;
  if (starts_with(head, {0xfd, '7', 'z', 'X', 'Z', 0x00})) return Compression::Xz;
  return Compression::None;
}

std::unique_ptr<Writer> make_compressor(Compression c, Writer& out, const CompressOptions& options) {
  switch (c) {
    case Compression::None:
      return std::make_unique<PassThroughWriter>(out);
    case Compression::Gzip: {
      int level = options.level != -1    ? options.level
                  : options.reproducible ? kGzipReproducibleLevel
                                         : kGzipDefaultLevel;
      if (level < 0 || level > 9)
        throw InvalidInputError(fmt::format("gzip: invalid compression level {}", level));
      return std::make_unique<GzipCompressor>(out, level, thread_count(options));
    }
    case Compression::Zstd: {
      int level = options.level == -1 ? kZstdDefaultLevel : options.level;
      if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        throw InvalidInputError(fmt::format("zstd: invalid compression level {}", level));
      }
      return std::make_unique<ZstdCompressor>(out, level, thread_count(options));
    }
    case Compression::Bzip2:
    case Compression::Xz:
      break;
  }
  throw InvalidInputError(
      fmt::format("{} compression is not supported for writing (use gzip or zstd)", compression_name(c)));
}

std::unique_ptr<Reader> make_decompressor(Compression c, Reader& in, const DecompressLimits& limits) {
  switch (c) {
    case Compression::None:
      return std::make_unique<PassThroughReader>(in);
    case Compression::Gzip:
      return std::make_unique<GzipDecompressor>(in, limits);
    case Compression::Zstd:
      return std::make_unique<ZstdDecompressor>(in, limits);
    case Compression::Bzip2:
    case Compression::Xz:
      return std::make_unique<ArchiveFilterDecompressor>(in, c, limits);
  }
  throw InvalidInputError("unknown compression");
}

std::unique_ptr<Reader> open_decompressed(Reader& in, Compression* detected, const DecompressLimits& limits) {
  auto peeked = std::make_unique<PeekReader>(in);
  Compression c = detect_compression(peeked->peek(6));
  if (detected) *detected = c;
  return std::make_unique<SniffedReader>(std::move(peeked), c, limits);
}

}  // namespace kiln
