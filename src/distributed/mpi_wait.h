// Waiting on MPI requests without spinning a core: test, and sleep with a growing pause when
// nothing is ready (ranks may share cores with each other: --oversubscribe). A wait that sees
// nothing for `timeout_s` prints one error line and aborts the job, so a hung rank cannot hang
// the others.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace dsv4::dist {

// Waits until every request in `reqs` completes.
void wait_all(std::vector<MPI_Request>* reqs, double timeout_s, const std::string& what);

// Waits for one request; returns when done.
void wait_one(MPI_Request* req, double timeout_s, const std::string& what);

// Blocks (sleeping) until a message with `tag` from `source` is available; none for `timeout_s`
// ends the job like wait_all.
void wait_message(int source, int tag, MPI_Status* status, double timeout_s, const std::string& what);

// Lets outstanding transfers progress (called between pieces of compute).
void progress(std::vector<MPI_Request>* reqs);

// Prints "dsv4: error: (rank R) what" and ends every rank of the job.
[[noreturn]] void abort_job(const std::string& what);

double now_s();

}  // namespace dsv4::dist
