// Fuzz target: the tokenizer.json loader (model/tokenizer*.cc), then the loaded tokenizer at
// work: encode, decode (whole and streamed), the pipeline stages and the Engram compressed token
// map built from it.
//
// Input: TOKENIZER_JSON '\0' TEXT (fuzz_input.h). Without a TEXT part a fixed text with ASCII,
// accents, digits, an added token and invalid UTF-8 is encoded. Anything may fail with a Status;
// crashes, sanitizer reports, hangs and leaks are the findings.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/compressed_vocab.h"
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

constexpr char kDefaultText[] =
    "Hello, world! It's 2026: caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac  \t\n"
    "<|endoftext|> 12345 \xf0\x9f\x98\x80 end";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const engram::fuzz::TwoParts in = engram::fuzz::SplitAtNul(data, size);
  auto tokenizer = engram::Tokenizer::FromJson(absl::string_view(in.a.data(), in.a.size()));
  if (!tokenizer.ok()) return 0;
  const engram::Tokenizer& t = **tokenizer;
  const absl::string_view text =
      in.has_b ? absl::string_view(in.b.data(), in.b.size()) : absl::string_view(kDefaultText);

  (void)t.Normalize(text);
  (void)t.PreTokenize(text);
  for (bool special : {false, true}) {
    auto ids = t.Encode(text, special);
    if (!ids.ok()) continue;
    for (uint32_t id : *ids) {
      // Without the post-processor, Encode only produces ids of its vocabulary. With it, the ids
      // the file gives a template's special tokens are emitted as they are, known or not, as
      // Hugging Face tokenizers does (the worker checks prompt ids against the model anyway).
      if (!special && !t.IsValidId(id)) __builtin_trap();
      (void)t.IdToToken(id);
    }
    (void)t.Decode(*ids, /*skip_special_tokens=*/special);
    engram::DecodeStream stream(t, special);
    for (uint32_t id : *ids) (void)stream.Step(id);
    (void)stream.Flush();
  }
  // Ids around the edges of the vocabulary, known or not.
  const std::vector<uint32_t> edges = {0, t.max_id(), t.max_id() + 1,
                                       static_cast<uint32_t>(t.size()), 0xffffffffu};
  (void)t.Decode(edges);
  // The Engram token map walks every id; bounded by the input size (a vocabulary of N entries
  // needs about N * 6 bytes of JSON).
  (void)engram::BuildCompressedTokenMap(t);
  return 0;
}
