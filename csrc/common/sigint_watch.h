// Ctrl-C for native code that runs without the GIL. Python's SIGINT handler
// only records the signal; its KeyboardInterrupt is raised when the
// interpreter next runs bytecode, i.e. after a long prefill has finished.
// While a SigintWatch lives, SIGINT also sets an atomic flag the forward pass
// polls between layers, and still reaches the handler installed before
// (Python's), so Python raises KeyboardInterrupt as soon as the call returns.
#pragma once
#include <atomic>

namespace edgemoe {

class SigintWatch {
 public:
  // Watches only when the current SIGINT handler is a function (not the
  // default action or "ignore"). Construct on one thread at a time: the
  // previous handler is kept in process-wide state.
  SigintWatch();
  ~SigintWatch();
  SigintWatch(const SigintWatch&) = delete;
  SigintWatch& operator=(const SigintWatch&) = delete;

  // True once SIGINT arrived while watching; nullptr when not watching.
  const std::atomic<bool>* flag() const;

 private:
  bool installed_ = false;
};

}  // namespace edgemoe
