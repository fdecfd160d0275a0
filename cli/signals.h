// Signals while kiln waits for a container: the terminal's and the system's requests (SIGINT,
// SIGTERM, ...) are blocked and read from a signalfd, to be passed on to the container (`kiln
// run`) or to stop a build cleanly (`kiln build`). Process-wide state, so it lives here, in the
// command line, and not in the libraries.
#pragma once

#include <signal.h>

#include <map>

#include "layerstore/io.h"

namespace kiln::cli {

class BlockedSignals {
 public:
  // Blocks SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH in the calling thread
  // (threads started later inherit the mask) and opens a signalfd for them. A signal the process
  // ignores (a shell leaves SIGINT and SIGQUIT ignored for a background job) would be discarded
  // rather than become pending, so those are set to their default action while blocked.
  BlockedSignals();
  ~BlockedSignals();
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;

  // Readable when a signal is pending; non-blocking; read signalfd_siginfo records from it.
  int fd() const { return fd_.get(); }

 private:
  sigset_t previous_mask_{};
  std::map<int, struct sigaction> previous_actions_;
  Fd fd_;
};

}  // namespace kiln::cli
