#include "builder/progress.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "layerstore/errors.h"

namespace kiln::builder {
namespace {

// How many lines of each running step the live view shows, as BuildKit's does.
constexpr size_t kViewLines = 6;
// How many lines of each step are kept for the view and for the error report.
constexpr size_t kKeptLines = 20;

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// A line of output as one line of the display: no carriage returns (a progress bar's redraws)
// beyond the last, no trailing whitespace.
std::string clean_line(std::string line) {
  if (auto cr = line.rfind('\r'); cr != std::string::npos) {
    line = cr + 1 == line.size() ? line.substr(0, cr) : line.substr(cr + 1);
  }
  while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) line.pop_back();
  return line;
}

}  // namespace

ProgressMode parse_progress_mode(std::string_view text) {
  if (text == "auto") return ProgressMode::kAuto;
  if (text == "plain") return ProgressMode::kPlain;
  if (text == "tty") return ProgressMode::kTty;
  if (text == "quiet") return ProgressMode::kQuiet;
  throw UsageError(fmt::format("--progress `{}`: use auto, plain, tty or quiet", text));
}

Progress::Progress(ProgressMode mode, int fd) : mode_(mode), fd_(fd) {
  if (mode_ == ProgressMode::kAuto) {
    const char* term = std::getenv("TERM");
    bool terminal = ::isatty(fd) && !(term && std::string_view(term) == "dumb");
    mode_ = terminal ? ProgressMode::kTty : ProgressMode::kPlain;
  }
  if (mode_ == ProgressMode::kTty) painter_ = std::thread([this] { redraw_loop(); });
}

Progress::~Progress() {
  finish();
}

void Progress::finish() {
  {
    std::lock_guard lock(mutex_);
    if (finished_) return;
    finished_ = true;
    stopping_ = true;
  }
  wake_.notify_all();
  if (painter_.joinable()) painter_.join();
  std::lock_guard lock(mutex_);
  if (mode_ == ProgressMode::kTty) redraw(true);
  for (const std::string& report : reports_) write(report);
  reports_.clear();
}

std::string Progress::name(int number) {
  std::lock_guard lock(mutex_);
  return vertex(number).name;
}

void Progress::report(std::string text) {
  std::lock_guard lock(mutex_);
  if (finished_) {
    write(text);
  } else {
    reports_.push_back(std::move(text));
  }
}

Progress::Vertex& Progress::vertex(int number) {
  return *vertices_.at(static_cast<size_t>(number - 1));
}

int Progress::start(std::string name) {
  std::lock_guard lock(mutex_);
  auto v = std::make_unique<Vertex>();
  v->number = static_cast<int>(vertices_.size()) + 1;
  v->name = std::move(name);
  v->started = Clock::now();
  vertices_.push_back(std::move(v));
  Vertex& added = *vertices_.back();
  if (mode_ == ProgressMode::kPlain) print_plain(added, "");
  return added.number;
}

void Progress::output(int number, std::string_view data) {
  std::lock_guard lock(mutex_);
  Vertex& v = vertex(number);
  v.partial.append(data);
  size_t start = 0;
  for (size_t newline; (newline = v.partial.find('\n', start)) != std::string::npos; start = newline + 1) {
    add_line(v, v.partial.substr(start, newline - start));
  }
  v.partial.erase(0, start);
}

void Progress::add_line(Vertex& v, std::string line) {
  line = clean_line(std::move(line));
  if (mode_ == ProgressMode::kPlain) {
    print_plain(v, fmt::format("{:.3f} {}", seconds(Clock::now() - v.started), line));
  }
  v.lines.push_back(std::move(line));
  if (v.lines.size() > kKeptLines) v.lines.pop_front();
}

void Progress::note(int number, std::string text) {
  std::lock_guard lock(mutex_);
  Vertex& v = vertex(number);
  if (mode_ == ProgressMode::kPlain) print_plain(v, text);
  v.lines.push_back(std::move(text));
  if (v.lines.size() > kKeptLines) v.lines.pop_front();
}

void Progress::cached(int number) {
  std::lock_guard lock(mutex_);
  Vertex& v = vertex(number);
  v.state = State::kCached;
  v.ended = Clock::now();
  if (mode_ == ProgressMode::kPlain) print_plain(v, "CACHED");
}

void Progress::done(int number) {
  std::lock_guard lock(mutex_);
  Vertex& v = vertex(number);
  if (!v.partial.empty()) {
    add_line(v, v.partial);
    v.partial.clear();
  }
  v.state = State::kDone;
  v.ended = Clock::now();
  if (mode_ == ProgressMode::kPlain)
    print_plain(v, fmt::format("DONE {:.1f}s", seconds(v.ended - v.started)));
}

void Progress::error(int number, const std::string& message) {
  std::lock_guard lock(mutex_);
  Vertex& v = vertex(number);
  if (!v.partial.empty()) {
    add_line(v, v.partial);
    v.partial.clear();
  }
  v.state = State::kError;
  v.ended = Clock::now();
  if (mode_ == ProgressMode::kPlain) print_plain(v, "ERROR: " + message);
}

std::vector<std::string> Progress::last_lines(int number, size_t count) {
  std::lock_guard lock(mutex_);
  Vertex& v = vertex(number);
  std::vector<std::string> out;
  size_t skip = v.lines.size() > count ? v.lines.size() - count : 0;
  for (size_t i = skip; i < v.lines.size(); ++i) out.push_back(v.lines[i]);
  if (!v.partial.empty()) out.push_back(clean_line(v.partial));
  return out;
}

void Progress::print_plain(const Vertex& v, const std::string& text) {
  std::string out;
  // BuildKit's plain view: a blank line between the blocks of different vertices, and a vertex
  // that comes back after another's lines is named again.
  if (last_printed_ != v.number) {
    if (last_printed_ != 0) out += "\n";
    out += fmt::format("#{} {}\n", v.number, v.name);
    last_printed_ = v.number;
  }
  if (!text.empty()) out += fmt::format("#{} {}\n", v.number, text);
  write(out);
}

void Progress::write(std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd_, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // progress is a courtesy: a closed stderr must not fail the build
    }
    text.remove_prefix(static_cast<size_t>(n));
  }
}

void Progress::redraw_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    redraw(false);
    wake_.wait_for(lock, std::chrono::milliseconds(100));
  }
}

void Progress::redraw(bool final) {
  winsize size{};
  size_t width = 80, height = 24;
  if (::ioctl(fd_, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) {
    width = size.ws_col;
    height = size.ws_row > 0 ? size.ws_row : height;
  }
  auto fit = [&](std::string line, const std::string& right) {
    size_t room = width > right.size() + 1 ? width - right.size() - 1 : 0;
    if (line.size() > room) line.resize(room);
    if (!right.empty()) line += std::string(width - right.size() - line.size(), ' ') + right;
    return line;
  };
  std::vector<std::string> lines;
  size_t finished = 0;
  for (const auto& v : vertices_) {
    if (v->state != State::kRunning) ++finished;
  }
  Clock::time_point now = Clock::now();
  lines.push_back(fmt::format("[+] Building {:.1f}s ({}/{}){}", seconds(now - begun_), finished,
                              vertices_.size(), final ? " FINISHED" : ""));
  for (const auto& v : vertices_) {
    std::string prefix = v->state == State::kCached  ? " => CACHED "
                         : v->state == State::kError ? " => ERROR "
                                                     : " => ";
    Clock::time_point end = v->state == State::kRunning ? now : v->ended;
    lines.push_back(fit(prefix + v->name, fmt::format("{:.1f}s", seconds(end - v->started))));
    if (v->state == State::kRunning || v->state == State::kError) {
      size_t skip = v->lines.size() > kViewLines ? v->lines.size() - kViewLines : 0;
      for (size_t i = skip; i < v->lines.size(); ++i) lines.push_back(fit(" => => # " + v->lines[i], ""));
    }
  }
  // Only what fits: the newest vertices matter most while building.
  if (!final && lines.size() + 1 > height) {
    lines.erase(lines.begin() + 1, lines.begin() + 1 + static_cast<long>(lines.size() + 1 - height));
  }
  std::string out;
  if (drawn_lines_ > 0) out += fmt::format("\033[{}A", drawn_lines_);
  for (const std::string& line : lines) out += "\r\033[K" + line + "\n";
  out += "\033[J";
  drawn_lines_ = lines.size();
  write(out);
}

}  // namespace kiln::builder
