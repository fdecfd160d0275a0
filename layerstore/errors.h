// The typed errors kiln throws above the ordinary-failure level. Only cli/ catches them; it prints
// `kiln: error: <what()>` and exits with exit_code(). Messages follow one voice: lowercase, the
// operation and the object first, then the cause ("load `img.tar`: blob sha256:ab…: digest mismatch").
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kiln {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  // Docker exits 1 for a failed operation and 125 for a bad command line.
  virtual int exit_code() const { return 1; }
};

// The command line itself is wrong (unknown flag, missing argument, malformed value).
class UsageError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 125; }
};

// Something named by the user does not exist (image, tag, file).
class NotFoundError : public Error {
 public:
  using Error::Error;
};

// Input read from outside (an archive, a manifest, a config) is malformed or hostile.
class InvalidInputError : public Error {
 public:
  using Error::Error;
};

// A system call failed; the message carries strerror.
class SystemError : public Error {
 public:
  SystemError(const std::string& what, int err);
  int code() const { return errno_; }

 private:
  int errno_;
};

// Throws SystemError(what, errno). For `if (::open(...) < 0) throw_errno("open `{}`", p);`
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(const std::string& what, int err);

// Prefixes an in-flight kiln::Error with context, keeping its type's exit code semantics simple:
// the result is a plain Error whose message reads "context: inner".
[[noreturn]] void rethrow_with_context(const std::string& context);

}  // namespace kiln
