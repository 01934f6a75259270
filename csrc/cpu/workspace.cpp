#include "workspace.h"

#include <memory>

namespace fastpid {
namespace cpu {

char* thread_workspace(size_t bytes) {
  thread_local std::unique_ptr<char[]> buffer;
  thread_local size_t capacity = 0;
  if (capacity < bytes) {
    buffer.reset(new char[bytes]);  // default-initialised: not zeroed
    capacity = bytes;
  }
  return buffer.get();
}

}  // namespace cpu
}  // namespace fastpid
