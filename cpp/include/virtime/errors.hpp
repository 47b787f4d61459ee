// Error types of the C++ core. Each carries the file it concerns and a reason, so the Python
// layer can print one line that names both. The binding maps each kind to a class in
// virtime.errors (which also derive from a matching builtin, e.g. ValueError).
#pragma once
#include <stdexcept>
#include <string>

namespace virtime {

enum class ErrorKind {
  Generic,        // VirtimeError
  NotFound,       // SlideNotFoundError (FileNotFoundError)
  SlideFormat,    // SlideFormatError (ValueError): not a slide / unsupported format
  SlideRead,      // SlideReadError (OSError): a read failed (truncated or corrupt data)
  MissingMpp,     // MissingMppError (ValueError)
  InvalidMpp,     // InvalidMppError (ValueError)
  SlideTooSmall,  // SlideTooSmallError (ValueError)
  Library,        // OpenSlideLibraryError (ImportError-like): the runtime library is missing
  InvalidArgument,// InvalidArgumentError (ValueError)
  Cuda,           // CudaError (RuntimeError)
  Batcher,        // BatcherError (RuntimeError): a batcher worker failed on something other than a
                  // slide read (a bug, memory exhausted); the run stops instead of skipping the tile
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string file, std::string reason)
      : std::runtime_error(file.empty() ? reason : file + ": " + reason),
        kind_(kind), file_(std::move(file)), reason_(std::move(reason)) {}
  ErrorKind kind() const noexcept { return kind_; }
  const std::string& file() const noexcept { return file_; }
  const std::string& reason() const noexcept { return reason_; }

 private:
  ErrorKind kind_;
  std::string file_;
  std::string reason_;
};

inline Error invalid_argument(const std::string& reason) {
  return Error(ErrorKind::InvalidArgument, "", reason);
}

}  // namespace virtime
