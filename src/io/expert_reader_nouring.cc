// DirectReader without liburing (the library was absent when this build was configured): the
// io_uring engine is never available and readers use the thread pool.
#include "io/expert_reader.h"

namespace dsv4 {

struct DirectReader::Uring {};

void DirectReader::UringDeleter::operator()(Uring* u) const { delete u; }
bool DirectReader::uring_built() { return false; }
bool DirectReader::start_uring(int) { return false; }
void DirectReader::stop_uring() {}

}  // namespace dsv4
