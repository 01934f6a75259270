#include "workspace.h"

#include <memory>

namespace fastpid {
namespace cpu {
namespace {

struct ThreadBuffer {
  std::unique_ptr<char[]> memory;
  size_t capacity = 0;
  bool in_use = false;
};
thread_local ThreadBuffer buffer;

}  // namespace

char* acquire_workspace(size_t bytes) {
  if (bytes > kCachedWorkspaceBytes || buffer.in_use) return new char[bytes];  // default-initialised: not zeroed
  if (buffer.capacity < bytes) {
    buffer.memory.reset(new char[bytes]);
    buffer.capacity = bytes;
  }
  buffer.in_use = true;
  return buffer.memory.get();
}

void release_workspace(char* workspace) {
  if (buffer.in_use && workspace == buffer.memory.get())
    buffer.in_use = false;
  else
    delete[] workspace;
}

}  // namespace cpu
}  // namespace fastpid
