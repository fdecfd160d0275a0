#include "cli/signals.h"

#include <sys/signalfd.h>

#include "layerstore/errors.h"

namespace kiln::cli {

BlockedSignals::BlockedSignals() {
  sigset_t blocked;
  ::sigemptyset(&blocked);
  for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH})
    ::sigaddset(&blocked, signal);
  ::pthread_sigmask(SIG_BLOCK, &blocked, &previous_mask_);
  for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) {
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    ::sigaction(signal, &default_action, &previous_actions_[signal]);
  }
  fd_ = Fd(::signalfd(-1, &blocked, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd_.valid()) throw_errno("watch signals");
}

BlockedSignals::~BlockedSignals() {
  for (const auto& [signal, action] : previous_actions_) ::sigaction(signal, &action, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr);
}

}  // namespace kiln::cli
