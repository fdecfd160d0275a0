// What a build shows while it runs, in BuildKit's words: every step is a vertex, numbered in the
// order it starts (`#5 [2/7] RUN make`), with its output lines timed from its start (`#5 0.213
// compiling`) and how it ended (`#5 CACHED`, `#5 DONE 1.2s`, `#5 ERROR: …`).
//   plain: those lines as they happen (BuildKit's --progress=plain), for CI logs;
//   tty:   a view redrawn in place, each vertex on one line with its time, and the last lines of
//          the running ones under it (BuildKit's default on a terminal);
//   quiet: nothing.
// Every member is safe to call from several threads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kiln::builder {

enum class ProgressMode { kAuto, kPlain, kTty, kQuiet };

// "auto", "plain", "tty", "quiet" (BuildKit's names; "rawjson" is not kiln's). Throws UsageError.
ProgressMode parse_progress_mode(std::string_view text);

class Progress {
 public:
  // Writes to `fd` (kiln's standard error). kAuto picks kTty when fd is a terminal (and TERM is not
  // "dumb"), else kPlain.
  Progress(ProgressMode mode, int fd);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  ProgressMode mode() const { return mode_; }

  // Starts a vertex; returns its number.
  int start(std::string name);
  // Output of the vertex's process, in pieces as they come; lines are shown whole.
  void output(int vertex, std::string_view data);
  // A line about the vertex that is not its process's output ("cache miss: …", "writing image …").
  void note(int vertex, std::string text);
  void cached(int vertex);
  void done(int vertex);
  void error(int vertex, const std::string& message);
  // The vertex's last `count` lines of output, oldest first.
  std::vector<std::string> last_lines(int vertex, size_t count);
  std::string name(int vertex);
  // Text shown once the display is finished (a failed step's report), in every mode.
  void report(std::string text);
  // Ends the live view (the final picture stays on the terminal). Called by the destructor too.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  enum class State { kRunning, kCached, kDone, kError };
  struct Vertex {
    int number = 0;
    std::string name;
    Clock::time_point started;
    Clock::time_point ended;
    State state = State::kRunning;
    std::string partial;            // output not yet ended by a newline
    std::deque<std::string> lines;  // the last lines, for the view and for errors
  };

  Vertex& vertex(int number);
  void add_line(Vertex& v, std::string line);                  // mutex held
  void print_plain(const Vertex& v, const std::string& text);  // mutex held
  void write(std::string_view text);                           // mutex held
  void redraw_loop();
  void redraw(bool final);  // mutex held

  ProgressMode mode_;
  int fd_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Vertex>> vertices_;
  int last_printed_ = 0;  // plain: the vertex of the last line, for BuildKit's blank separators
  Clock::time_point begun_ = Clock::now();
  // tty: the redrawing thread and how many lines the last picture took.
  std::thread painter_;
  std::condition_variable wake_;
  bool stopping_ = false;
  size_t drawn_lines_ = 0;
  bool finished_ = false;
  std::vector<std::string> reports_;
};

}  // namespace kiln::builder
