// The block-per-joint CUDA op's code on the CPU: each joint solved by an
// emulated team, whose lanes run one after the other (coroutines: ucontext)
// from one sync to the next.  The lanes of a phase run in one order, those of
// the next phase in the reverse order (0 … n−1, n−1 … 0, …), so that a read of
// another lane's entry that a missing sync() leaves unordered gets the wrong
// value in one of the two orders, and the tests see it; a lane that reaches a
// sync the others do not is reported.
#include "broja_block_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <ucontext.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "../broja_block.h"  // the solver's team copy: no other solver header here

namespace fastpid {
namespace {

// One emulated team of `lanes`: run(body) runs body(team) on every lane.
class TeamEmulation {
 public:
  explicit TeamEmulation(int lanes)
      : lanes_(lanes), contexts_(lanes), stacks_(lanes), scratch_(std::max(lanes, 2)), finished_(lanes) {
    for (auto& stack : stacks_) stack.reset(new char[kStackBytes]);
  }

  // Runs body(team) on every lane, lane 0 first; false if the lanes diverged
  // (one lane reached a sync that another, finished, never did).
  template <typename Body>
  bool run(Body& body) {
    body_ = &body;
    call_ = [](void* body, const broja::Team& team) { (*static_cast<Body*>(body))(team); };
    current_ = 0;
    forward_ = true;
    arrived_ = finished_count_ = 0;
    diverged_ = false;
    for (int lane = 0; lane < lanes_; ++lane) {
      finished_[lane] = false;
      getcontext(&contexts_[lane]);
      contexts_[lane].uc_stack.ss_sp = stacks_[lane].get();
      contexts_[lane].uc_stack.ss_size = kStackBytes;
      contexts_[lane].uc_link = &caller_;
      const uintptr_t self = reinterpret_cast<uintptr_t>(this);
      makecontext(&contexts_[lane], reinterpret_cast<void (*)()>(&TeamEmulation::entry), 3, unsigned(self >> 32),
                  unsigned(self & 0xffffffffu), lane);
    }
    swapcontext(&caller_, &contexts_[0]);
    return !diverged_;
  }

 private:
  static constexpr size_t kStackBytes = size_t(256) << 10;

  static void entry(unsigned high, unsigned low, int lane) {
    auto* self = reinterpret_cast<TeamEmulation*>((uintptr_t(high) << 32) | low);
    broja::Team team;
    team.lane = lane;
    team.lanes = self->lanes_;
    team.values = self->scratch_.data();
    team.wait = &TeamEmulation::wait;
    team.emulation = self;
    self->call_(self->body_, team);
    self->finished_[lane] = true;
    ++self->finished_count_;
    if (self->finished_count_ == self->lanes_) return;  // to uc_link: the caller
    const int next = self->next_lane(lane);
    if (next < 0) {  // the others wait at a sync this lane never reached
      self->diverged_ = true;
      self->arrived_ = 0;
      self->resume(lane, self->any_unfinished());
    } else {
      self->resume(lane, next);
    }
  }

  // The barrier: the next lane of this phase runs, or, when every unfinished
  // lane has arrived, this one goes on first in the next phase (reverse order).
  static void wait(void* emulation) {
    auto* self = static_cast<TeamEmulation*>(emulation);
    const int lane = self->current_;
    if (self->finished_count_ > 0) self->diverged_ = true;
    if (++self->arrived_ == self->lanes_ - self->finished_count_) {
      self->arrived_ = 0;
      self->forward_ = !self->forward_;
      return;
    }
    const int next = self->next_lane(lane);
    self->resume(lane, next >= 0 ? next : self->any_unfinished());
  }

  // The next unfinished lane after `lane` in this phase's order (−1: none).
  int next_lane(int lane) const {
    for (int l = forward_ ? lane + 1 : lane - 1; l >= 0 && l < lanes_; l += forward_ ? 1 : -1)
      if (!finished_[l]) return l;
    return -1;
  }
  int any_unfinished() const {
    for (int l = 0; l < lanes_; ++l)
      if (!finished_[l]) return l;
    return -1;
  }
  void resume(int from, int to) {
    current_ = to;
    swapcontext(&contexts_[from], &contexts_[to]);
  }

  const int lanes_;
  std::vector<ucontext_t> contexts_;
  std::vector<std::unique_ptr<char[]>> stacks_;
  std::vector<double> scratch_;
  std::vector<bool> finished_;
  ucontext_t caller_;
  void* body_ = nullptr;
  void (*call_)(void*, const broja::Team&) = nullptr;
  int current_ = 0, arrived_ = 0, finished_count_ = 0;
  bool forward_ = true, diverged_ = false;
};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> broja_solve_block_cpu(
    const at::Tensor& p, double tol, int64_t max_iter, int64_t patience, int64_t lanes) {
  constexpr const char* op = "fastpid::broja_solve_block";
  TORCH_CHECK(p.device().is_cpu(), op, ": expected p on the CPU, got ", p.device());
  const int64_t teams = at::get_num_threads();
  return block::solve_batch(
      p, tol, max_iter, patience, lanes, teams, op, [&](const block::SolveArgs& args, int64_t teams) {
        // Team t solves joints t, t + teams, … in workspace t.
        at::parallel_for(0, teams, 1, [&](int64_t begin, int64_t end) {
          for (int64_t t = begin; t < end; ++t) {
            TeamEmulation emulation(args.lanes);
            char* workspace = args.workspace + size_t(t) * args.workspace_bytes;
            for (int64_t i = t; i < args.batch; i += teams) {
              auto body = [&](const broja::Team& team) { block::solve(args, i, workspace, team); };
              TORCH_CHECK(emulation.run(body), op, ": the lanes of joint ", i, " reached different syncs");
            }
          }
        });
      });
}

}  // namespace fastpid
