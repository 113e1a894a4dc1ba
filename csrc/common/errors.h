// Exception types of the runtime. bindings.cpp maps each one onto the Python
// exception of the same name in edgemoe.errors, so a user never sees a bare
// std::runtime_error (or a crash) for something their input caused.
#pragma once
#include <stdexcept>
#include <string>

namespace edgemoe {

struct EdgeMoEError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The container (or another input file) is malformed, truncated or corrupt.
struct FormatError : EdgeMoEError {
  using EdgeMoEError::EdgeMoEError;
};
// Reading from storage failed: I/O error, short read, checksum mismatch on an expert.
struct StorageError : EdgeMoEError {
  using EdgeMoEError::EdgeMoEError;
};
// The memory budget cannot hold what the model needs.
struct BudgetError : EdgeMoEError {
  using EdgeMoEError::EdgeMoEError;
};

// A forward pass was stopped on request (Ctrl-C); not an error of the input.
// bindings.cpp turns it into Python's KeyboardInterrupt.
struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A forward pass was stopped through the caller's cancel token (another
// thread: a server whose client left, a stop button). edgemoe.Cancelled.
struct Cancelled : EdgeMoEError {
  using EdgeMoEError::EdgeMoEError;
};

}  // namespace edgemoe
