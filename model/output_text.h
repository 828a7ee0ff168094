// The text of a generation as the client receives it: tokens detokenized one at a time
// (DecodeStream) and cut at the first stop string (StopStringMatcher). The scheduler and
// LocalGenerate both produce their text through it, so the two agree token for token.
#ifndef ENGRAM_MODEL_OUTPUT_TEXT_H_
#define ENGRAM_MODEL_OUTPUT_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "model/sampler.h"
#include "model/tokenizer.h"

namespace engram {

class OutputText {
 public:
  // `tokenizer` must outlive the object.
  OutputText(const Tokenizer& tokenizer, bool skip_special_tokens,
             std::vector<std::string> stop_strings);

  // The text of one more generated token that is safe to emit now; on a stop string sets *stopped
  // and returns the text before it (later calls return nothing).
  std::string Step(uint32_t token, bool* stopped);
  // At the end of the generation: the text still held back (an incomplete character, a possible
  // stop-string prefix). *stopped tells whether that text completes a stop string.
  std::string Finish(bool* stopped);

 private:
  DecodeStream detokenizer_;
  StopStringMatcher stop_strings_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_OUTPUT_TEXT_H_
