#include "sigint_watch.h"

#if defined(__unix__) || defined(__APPLE__)
#include <csignal>

namespace edgemoe {
namespace {

std::atomic<bool> g_interrupted{false};
struct sigaction g_previous;

// Async-signal-safe: a lock-free atomic store and a call of the previous handler.
extern "C" void on_sigint(int sig, siginfo_t* info, void* context) {
  g_interrupted.store(true);
  if (g_previous.sa_flags & SA_SIGINFO)
    g_previous.sa_sigaction(sig, info, context);
  else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN)
    g_previous.sa_handler(sig);
}

}  // namespace

SigintWatch::SigintWatch() {
  struct sigaction current;
  if (sigaction(SIGINT, nullptr, &current) != 0) return;
  const bool is_function = (current.sa_flags & SA_SIGINFO) ||
                           (current.sa_handler != SIG_DFL && current.sa_handler != SIG_IGN);
  if (!is_function) return;
  // Already ours: a fork() from another thread while a watch was active left
  // it installed in this (child) process. Keep the handler it chains to, or
  // it would chain to itself.
  const bool ours = (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigint;
  if (!ours) g_previous = current;
  g_interrupted.store(false);
  struct sigaction mine = {};
  mine.sa_sigaction = on_sigint;
  mine.sa_flags = SA_SIGINFO | (current.sa_flags & SA_ONSTACK);
  sigemptyset(&mine.sa_mask);
  installed_ = sigaction(SIGINT, &mine, nullptr) == 0;
}

SigintWatch::~SigintWatch() {
  if (installed_) sigaction(SIGINT, &g_previous, nullptr);
}

const std::atomic<bool>* SigintWatch::flag() const { return installed_ ? &g_interrupted : nullptr; }

}  // namespace edgemoe

#else  // no POSIX signals: nothing to watch, Ctrl-C takes effect when the call returns

namespace edgemoe {
SigintWatch::SigintWatch() {}
SigintWatch::~SigintWatch() {}
const std::atomic<bool>* SigintWatch::flag() const { return nullptr; }
}  // namespace edgemoe

#endif
