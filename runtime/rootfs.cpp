#include "runtime/rootfs.h"

#include <fcntl.h>
#include <unistd.h>

#include <exception>
#include <thread>

#include "layerstore/errors.h"
#include "layerstore/io.h"
#include "layerstore/tar.h"

namespace kiln::runtime {

void flatten_layers(const std::vector<std::string>& lower_dirs, const std::string& target) {
  std::vector<Fd> layer_fds;
  std::vector<int> top_first;
  for (auto it = lower_dirs.rbegin(); it != lower_dirs.rend(); ++it) {
    layer_fds.push_back(open_or_throw(*it, O_RDONLY | O_DIRECTORY));
    top_first.push_back(layer_fds.back().get());
  }
  Fd target_fd = open_or_throw(target, O_RDONLY | O_DIRECTORY);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("create a pipe");
  Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  std::exception_ptr writer_error;
  std::thread writer([&] {
    try {
      FdWriter out(write_end.get(), "layer pipe");
      write_flattened_tar(top_first, out);
    } catch (...) {
      writer_error = std::current_exception();
    }
    // The reader sees the end of the stream (or, after a failure, a truncated one it refuses).
    write_end.reset();
  });
  try {
    FdReader in(read_end.get(), "layer pipe");
    extract_tar(in, target_fd.get());
  } catch (...) {
    // Unblocks a writer still filling the pipe: its next write fails and it stops.
    read_end.reset();
    writer.join();
    if (writer_error) std::rethrow_exception(writer_error);
    throw;
  }
  writer.join();
  if (writer_error) std::rethrow_exception(writer_error);
}

}  // namespace kiln::runtime
