// Shared pieces of the worker tests that run the real scheduler against a real engram-memory over
// gRPC loopback (cold_rows_test, rows_by_id_test): a sink that records one request's events, the
// tiny demo model written and imported into a fresh store, requests validated as the worker
// validates them, and the in-process reference generation they are compared with.
//
// Needs the GPT-2 tokenizer.json from scripts/fetch-testdata.sh (the demo model writer copies it).
#ifndef ENGRAM_TESTS_SERVER_TIER_WORKER_FIXTURE_H_
#define ENGRAM_TESTS_SERVER_TIER_WORKER_FIXTURE_H_

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "model/demo_model.h"
#include "model/local_generate.h"
#include "model/model.h"
#include "server/request.h"
#include "server/scheduler.h"
#include "tests/model/tiny_model.h"

namespace engram::testing {

// A request's tokens, the times of its first token and last event, and its final status.
class RecordingSink : public GenerateSink {
 public:
  void OnEvent(GenerateEvent e) override {
    absl::MutexLock lock(&mu_);
    for (uint32_t t : e.token_ids) tokens_.push_back(t);
    if (!e.token_ids.empty() && first_ == absl::InfinitePast()) first_ = absl::Now();
    if (e.last) {
      status_ = e.status;
      finished_ = absl::Now();
      done_.Notify();
    }
  }
  bool Wait(absl::Duration timeout = absl::Seconds(60)) {
    return done_.WaitForNotificationWithTimeout(timeout);
  }
  bool done() const { return done_.HasBeenNotified(); }
  std::vector<uint32_t> tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  absl::Time finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  absl::Time first() {
    absl::MutexLock lock(&mu_);
    return first_;
  }

 private:
  absl::Mutex mu_;
  std::vector<uint32_t> tokens_;
  absl::Status status_;
  absl::Time first_ = absl::InfinitePast();
  absl::Time finished_ = absl::InfiniteFuture();
  absl::Notification done_;
};

// The tiny demo model of `context` tokens, named `name`, written to model_dir and imported into a
// new store at store_dir (chunk_bytes: the importer's write unit, 0 = its default).
inline absl::StatusOr<std::unique_ptr<const Model>> WriteAndImportTinyModel(
    const std::string& model_dir, const std::string& store_dir, const std::string& name,
    int context, uint64_t chunk_bytes = 0) {
  if (!std::filesystem::exists(DefaultDemoTokenizerPath())) {
    return absl::FailedPreconditionError(
        absl::StrCat(DefaultDemoTokenizerPath(), " is missing: run scripts/fetch-testdata.sh"));
  }
  DemoModelOptions o = TinyModelOptions(context);
  o.model_name = name;
  if (absl::Status s = WriteDemoModel(model_dir, o); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<const Model>> model = Model::Load(model_dir);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::unique_ptr<Catalog>> catalog =
      Catalog::Open(store_dir, Catalog::Mode::kReadWrite);
  if (!catalog.ok()) return catalog.status();
  ImportOptions io;
  io.model_dir = model_dir;
  if (chunk_bytes > 0) io.chunk_bytes = chunk_bytes;
  if (auto imported = ImportModel(**catalog, io); !imported.ok()) return imported.status();
  return model;
}

// `text` as the worker would accept it: `max_tokens` new tokens, EOS ignored, a context of
// `context` tokens.
inline GenerateParams TestParams(const Model& model, const std::string& id, const std::string& text,
                                 int max_tokens, int context) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.set_request_id(id);
  r.mutable_stopping()->set_max_tokens(max_tokens);
  r.mutable_stopping()->set_ignore_eos(true);
  RequestLimits limits;
  limits.max_context_tokens = context;
  absl::StatusOr<GenerateParams> p =
      ValidateGenerateRequest(r, model, limits, absl::Now(), absl::InfiniteFuture());
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : GenerateParams{};
}

// The tokens the in-process generator (the model's own tables, one thread) gives for `text`.
inline std::vector<uint32_t> ReferenceTokens(const Model& model, const std::string& text,
                                             int max_tokens, int context) {
  GenerateParams p = TestParams(model, "ref", text, max_tokens, context);
  LocalGenerateOptions o;
  o.sampling = p.sampling;
  o.stop = p.stop;
  o.max_context = context;
  o.threads = 1;
  absl::StatusOr<LocalGenerateResult> r = LocalGenerate(model, p.prompt, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<uint32_t>{};
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_SERVER_TIER_WORKER_FIXTURE_H_
