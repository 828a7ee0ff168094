#include "server/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

// The recognised sources, byte for byte (the "\n" inside them are Jinja string escapes: a
// backslash and an n in the template text).
constexpr char kChatMlSource[] =
    R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";
constexpr char kChatMlDefaultSystemSource[] =
    R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";

constexpr char kSupported[] =
    "supported: the ChatML template, and ChatML with a default system message (docs/http-api.md)";

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(const std::string& source) {
  if (source == kChatMlSource) return ChatTemplate(Kind::kChatMl);
  if (source == kChatMlDefaultSystemSource) return ChatTemplate(Kind::kChatMlDefaultSystem);
  return absl::UnimplementedError(absl::StrCat(
      "the model's chat template is not one this worker can render faithfully (it renders known "
      "templates only, as no C++ Jinja engine is available; ",
      kSupported, "); use /v1/completions with a prompt you format yourself"));
}

absl::StatusOr<ChatTemplate> ChatTemplate::Load(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  const std::filesystem::path jinja = dir / "chat_template.jinja";
  std::error_code ec;
  if (std::filesystem::exists(jinja, ec)) {
    auto source = ReadFile(jinja);
    if (!source.ok()) return source.status();
    return FromSource(*source);
  }
  const std::filesystem::path config = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(config, ec)) {
    return absl::NotFoundError(
        "the model directory has no chat template (no chat_template.jinja, no "
        "tokenizer_config.json): use /v1/completions");
  }
  auto text = ReadFile(config);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.string(), " is not a JSON object, so its chat template is unknown"));
  }
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) {
    return absl::NotFoundError(
        "the model has no chat template (tokenizer_config.json has no chat_template): use "
        "/v1/completions");
  }
  if (it->is_string()) return FromSource(it->get<std::string>());
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return FromSource(entry["template"].get<std::string>());
      }
    }
    return absl::UnimplementedError(
        absl::StrCat("tokenizer_config.json lists named chat templates but none named \"default\"; ",
                     kSupported));
  }
  return absl::InvalidArgumentError("tokenizer_config.json chat_template is not a string or list");
}

const char* ChatTemplate::name() const {
  switch (kind_) {
    case Kind::kChatMl:
      return "chatml";
    case Kind::kChatMlDefaultSystem:
      return "chatml-default-system";
  }
  return "unknown";
}

std::string ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt) const {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (kind_ == Kind::kChatMlDefaultSystem && i == 0 && messages[0].role != "system") {
      out += "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
    }
    absl::StrAppend(&out, "<|im_start|>", messages[i].role, "\n", messages[i].content,
                    "<|im_end|>\n");
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace engram
