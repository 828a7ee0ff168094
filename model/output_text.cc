#include "model/output_text.h"

#include <utility>

namespace engram {

OutputText::OutputText(const Tokenizer& tokenizer, bool skip_special_tokens,
                       std::vector<std::string> stop_strings)
    : detokenizer_(tokenizer, skip_special_tokens), stop_strings_(std::move(stop_strings)) {}

std::string OutputText::Step(uint32_t token, bool* stopped) {
  return stop_strings_.Push(detokenizer_.Step(token), stopped);
}

std::string OutputText::Finish(bool* stopped) {
  *stopped = false;
  if (stop_strings_.stopped()) return "";
  std::string text = stop_strings_.Push(detokenizer_.Flush(), stopped);
  if (!*stopped) text += stop_strings_.Flush();
  return text;
}

}  // namespace engram
