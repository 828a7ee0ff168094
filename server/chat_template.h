// ChatTemplate: turns OpenAI chat messages into the prompt text of the model's chat template.
//
// Hugging Face models carry their chat template as Jinja source (tokenizer_config.json
// "chat_template", or a chat_template.jinja file). No well-kept C++ Jinja implementation is packaged
// for Debian bookworm (docs/decisions.md), and a hand-written interpreter would render some
// templates subtly wrong. So the worker recognises templates by their exact source text and renders
// each recognised one with a small C++ function whose output is checked against Python's jinja2
// (the engine transformers uses) on a set of conversations (tests/server/testdata/
// chat_template_golden.json, written by tests/server/gen_chat_template_golden.py).
// Any other template is reported as unsupported, with the reason, and the chat endpoint answers 400.
#ifndef ENGRAM_SERVER_CHAT_TEMPLATE_H_
#define ENGRAM_SERVER_CHAT_TEMPLATE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace engram {

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // The templates the worker can render.
  enum class Kind {
    // <|im_start|>{role}\n{content}<|im_end|>\n per message; "<|im_start|>assistant\n" to prompt.
    kChatMl,
    // ChatML that puts a default system message ("You are a helpful assistant.") first when the
    // conversation has none.
    kChatMlDefaultSystem,
  };

  // Reads the template of `model_dir`: chat_template.jinja when present, else tokenizer_config.json
  // "chat_template" (a string, or a list of {"name", "template"} of which "default" is used).
  // NOT_FOUND when the directory has none; UNIMPLEMENTED when it has one this worker cannot render
  // (the message says so and lists the supported ones); other errors for unreadable files.
  static absl::StatusOr<ChatTemplate> Load(const std::string& model_dir);
  // Recognises `source` (exact text). UNIMPLEMENTED when it is not a supported template.
  static absl::StatusOr<ChatTemplate> FromSource(const std::string& source);

  Kind kind() const { return kind_; }
  // "chatml", "chatml-default-system".
  const char* name() const;
  // The text that ends an assistant turn ("<|im_end|>"): generation stops there.
  const std::string& end_of_turn() const { return end_of_turn_; }

  // The prompt: the rendered conversation, plus the assistant turn's opening when
  // `add_generation_prompt`.
  std::string Render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  explicit ChatTemplate(Kind kind) : kind_(kind), end_of_turn_("<|im_end|>") {}
  Kind kind_;
  std::string end_of_turn_;
};

}  // namespace engram

#endif  // ENGRAM_SERVER_CHAT_TEMPLATE_H_
