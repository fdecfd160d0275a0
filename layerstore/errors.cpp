#include "layerstore/errors.h"

#include <cerrno>
#include <cstring>
#include <exception>

namespace kiln {

SystemError::SystemError(const std::string& what, int err)
    : Error(what + ": " + std::strerror(err)), errno_(err) {}

void throw_errno(const std::string& what) {
  throw SystemError(what, errno);
}
void throw_errno(const std::string& what, int err) {
  throw SystemError(what, err);
}

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const UsageError& e) {
    throw UsageError(context + ": " + e.what());
  } catch (const NotFoundError& e) {
    throw NotFoundError(context + ": " + e.what());
  } catch (const InvalidInputError& e) {
    throw InvalidInputError(context + ": " + e.what());
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace kiln
