#include "model/tokenizer_regex.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/tokenizer_unicode_data.h"
#include "model/tokenizer_utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace engram::tokenizer_internal {
namespace {

// The body of a bracket class, and an atom for its complement that is valid inside brackets
// (empty when PCRE2 has none). `exact`: content matches exactly what Oniguruma matches.
struct ClassSpec {
  std::string content;
  std::string negated_atom;
  bool patched = false;
  bool exact = true;
};

std::string RangesText(const CodepointRange* ranges, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    absl::StrAppendFormat(&out, "\\x{%X}", static_cast<uint32_t>(ranges[i].first));
    if (ranges[i].last != ranges[i].first) {
      absl::StrAppendFormat(&out, "-\\x{%X}", static_cast<uint32_t>(ranges[i].last));
    }
  }
  return out;
}

const PropertyPatch* FindPatch(absl::string_view name) {
  for (const PropertyPatch& patch : kPropertyPatches) {
    if (name == patch.name) return &patch;
  }
  return nullptr;
}

ClassSpec PropertyClass(absl::string_view name) {
  ClassSpec spec{absl::StrCat("\\p{", name, "}"), absl::StrCat("\\P{", name, "}")};
  if (const PropertyPatch* patch = FindPatch(name)) {
    spec.content += RangesText(patch->extra, patch->extra_count);
    spec.patched = patch->extra_count > 0;
    spec.exact = patch->exact;
  }
  return spec;
}

class Translator {
 public:
  Translator(absl::string_view pattern, std::vector<std::string>* warnings)
      : p_(pattern), warnings_(warnings) {}

  absl::StatusOr<std::string> Run() {
    while (i_ < p_.size()) {
      const char c = p_[i_];
      absl::Status status;
      if (c == '\\') {
        status = Escape();
      } else if (c == '[') {
        status = OpenBracket();
      } else if (c == ']' && in_class_) {
        in_class_ = false;
        out_.push_back(c);
        ++i_;
      } else if (c == '&' && in_class_ && i_ + 1 < p_.size() && p_[i_ + 1] == '&') {
        status = Unsupported("class intersection (&&)");
      } else if (c == '(' && !in_class_ && p_.substr(i_, 2) == "(?") {
        GroupOptions();
      } else {
        out_.push_back(c);
        ++i_;
      }
      if (!status.ok()) return status;
    }
    if (in_class_) return absl::InvalidArgumentError("unterminated character class");
    return out_;
  }

 private:
  absl::Status Unsupported(absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported Oniguruma construct: ", what));
  }

  absl::Status OpenBracket() {
    if (in_class_) {
      // A POSIX bracket such as [:alpha:] means the same in both engines; a nested class does not
      // exist in PCRE2.
      if (p_.substr(i_, 2) != "[:") return Unsupported("nested character class");
      const size_t end = p_.find(":]", i_ + 2);
      if (end == absl::string_view::npos) return absl::InvalidArgumentError("unterminated [: :]");
      out_.append(p_.data() + i_, end + 2 - i_);
      i_ = end + 2;
      return absl::OkStatus();
    }
    in_class_ = true;
    out_.push_back('[');
    ++i_;
    if (i_ < p_.size() && p_[i_] == '^') {
      out_.push_back('^');
      ++i_;
    }
    if (i_ < p_.size() && p_[i_] == ']') {  // a leading ']' is a literal in both engines
      out_ += "\\]";
      ++i_;
    }
    return absl::OkStatus();
  }

  // Ruby's (?m) is dot-all, PCRE2's (?s).
  void GroupOptions() {
    size_t j = i_ + 2;
    while (j < p_.size() && (p_[j] == 'i' || p_[j] == 'm' || p_[j] == 'x' || p_[j] == '-')) ++j;
    const bool flags = j > i_ + 2 && j < p_.size() && (p_[j] == ':' || p_[j] == ')');
    for (size_t k = i_; k < j; ++k) out_.push_back(flags && p_[k] == 'm' ? 's' : p_[k]);
    i_ = j;
  }

  absl::Status EmitClass(const ClassSpec& spec, bool negated, absl::string_view escape) {
    if (!spec.exact) {
      warnings_->push_back(absl::StrCat(escape, ": PCRE2 has code points Oniguruma lacks"));
    }
    if (!in_class_) {
      absl::StrAppend(&out_, negated ? "[^" : "[", spec.content, "]");
      return absl::OkStatus();
    }
    if (!negated) {
      out_ += spec.content;
      return absl::OkStatus();
    }
    if (spec.negated_atom.empty()) return Unsupported(absl::StrCat(escape, " inside a class"));
    if (spec.patched) {
      warnings_->push_back(
          absl::StrCat(escape, " inside a class keeps PCRE2's older Unicode tables"));
    }
    out_ += spec.negated_atom;
    return absl::OkStatus();
  }

  absl::Status Escape() {
    if (i_ + 1 >= p_.size()) return absl::InvalidArgumentError("pattern ends with a backslash");
    const char e = p_[i_ + 1];
    const absl::string_view escape = p_.substr(i_, 2);
    i_ += 2;
    switch (e) {
      case 's':
      case 'S':
        return EmitClass({"\\p{White_Space}", "\\P{White_Space}"}, e == 'S', escape);
      case 'd':
      case 'D':
        return EmitClass(PropertyClass("Nd"), e == 'D', escape);
      case 'h':
      case 'H':
        return EmitClass({"0-9a-fA-F", ""}, e == 'H', escape);
      case 'w':
      case 'W':
        return EmitClass({WordClass(), ""}, e == 'W', escape);
      case 'p':
      case 'P':
        return Property(e == 'P');
      case 'u':
        return Unicode4();
      case 'b':
      case 'B':
        warnings_->push_back(absl::StrCat(escape, " uses PCRE2's word characters"));
        break;
      default:
        break;
    }
    // Everything else means the same in both engines; copy the escaped character whole.
    i_ -= 1;
    const size_t len = Utf8Length(static_cast<unsigned char>(p_[i_]));
    absl::StrAppend(&out_, "\\", p_.substr(i_, len));
    i_ += len;
    return absl::OkStatus();
  }

  absl::Status Property(bool negated) {
    std::string name;
    if (i_ < p_.size() && p_[i_] == '{') {
      const size_t end = p_.find('}', i_);
      if (end == absl::string_view::npos) return absl::InvalidArgumentError("unterminated \\p{");
      name = std::string(p_.substr(i_ + 1, end - i_ - 1));
      i_ = end + 1;
    } else if (i_ < p_.size()) {
      name = std::string(p_.substr(i_, 1));
      ++i_;
    } else {
      return absl::InvalidArgumentError("\\p without a property name");
    }
    if (!name.empty() && name[0] == '^') {  // Oniguruma's \p{^X} is \P{X}
      negated = !negated;
      name.erase(0, 1);
    }
    return EmitClass(PropertyClass(name), negated,
                     absl::StrCat(negated ? "\\P{" : "\\p{", name, "}"));
  }

  absl::Status Unicode4() {
    const absl::string_view hex = p_.substr(i_, 4);
    if (hex.size() != 4 || !std::all_of(hex.begin(), hex.end(), absl::ascii_isxdigit)) {
      return absl::InvalidArgumentError("\\u needs four hex digits");
    }
    absl::StrAppend(&out_, "\\x{", hex, "}");
    i_ += 4;
    return absl::OkStatus();
  }

  static const std::string& WordClass() {
    static const std::string* word = new std::string(RangesText(kOnigWord, kOnigWordCount));
    return *word;
  }

  absl::string_view p_;
  std::vector<std::string>* warnings_;
  size_t i_ = 0;
  bool in_class_ = false;
  std::string out_;
};

// A JIT stack for the rare subject that overflows PCRE2's default 32 KiB one; one per thread
// because a JIT stack must not be shared by concurrent matches.
pcre2_match_context* LargeStackContext() {
  struct Holder {
    pcre2_match_context* context = nullptr;
    pcre2_jit_stack* stack = nullptr;
    ~Holder() {
      pcre2_jit_stack_free(stack);
      pcre2_match_context_free(context);
    }
  };
  thread_local Holder holder;
  if (holder.context == nullptr) {
    holder.context = pcre2_match_context_create(nullptr);
    holder.stack = pcre2_jit_stack_create(256 * 1024, 64 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(holder.context, nullptr, holder.stack);
  }
  return holder.context;
}

std::string Pcre2Error(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

absl::StatusOr<std::string> TranslateOnigPattern(absl::string_view pattern,
                                                 std::vector<std::string>* warnings) {
  return Translator(pattern, warnings).Run();
}

std::string EscapeLiteral(absl::string_view text) {
  std::string out;
  constexpr absl::string_view kMeta = "\\^$.|?*+()[]{}-#&~ \t\n\r\f\v";
  for (char c : text) {
    if (kMeta.find(c) != absl::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::Compile(absl::string_view pattern) {
  std::vector<std::string> warnings;
  absl::StatusOr<std::string> translated = TranslateOnigPattern(pattern, &warnings);
  if (!translated.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("regex \"", pattern, "\": ", translated.status().message()));
  }
  return CompileTranslated(std::string(pattern), *std::move(translated), std::move(warnings));
}

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::Literal(absl::string_view text) {
  return CompileTranslated(std::string(text), EscapeLiteral(text), {});
}

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::CompileTranslated(
    std::string source, std::string pcre2_pattern, std::vector<std::string> warnings) {
  std::unique_ptr<OnigRegex> regex(new OnigRegex());
  regex->source_ = std::move(source);
  regex->pcre2_pattern_ = std::move(pcre2_pattern);
  regex->warnings_ = std::move(warnings);
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);  // Oniguruma's lines end at LF only
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(regex->pcre2_pattern_.data()), regex->pcre2_pattern_.size(),
      PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, context);
  pcre2_compile_context_free(context);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("regex \"", regex->source_,
                                                   "\" does not compile: ", Pcre2Error(error),
                                                   " (PCRE2 form offset ", offset, ")"));
  }
  regex->code_ = code;
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return regex;
}

OnigRegex::~OnigRegex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::StatusOr<bool> OnigRegex::Search(absl::string_view subject, size_t start, MatchRange* match,
                                       void* match_data) const {
  auto* code = static_cast<pcre2_code*>(code_);
  auto* data = static_cast<pcre2_match_data*>(match_data);
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = jit_ ? pcre2_jit_match(code, s, subject.size(), start, 0, data, nullptr)
                : pcre2_match(code, s, subject.size(), start, PCRE2_NO_UTF_CHECK, data, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    rc = pcre2_jit_match(code, s, subject.size(), start, 0, data, LargeStackContext());
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "regex \"", source_, "\" failed on a ", subject.size(), "-byte text: ", Pcre2Error(rc)));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
  *match = {ovector[0], std::max(ovector[0], ovector[1])};
  return true;
}

absl::StatusOr<std::vector<MatchRange>> OnigRegex::FindAll(absl::string_view subject) const {
  std::vector<MatchRange> matches;
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  size_t next = 0;
  size_t last_match_end = absl::string_view::npos;
  absl::Status status;
  while (next <= subject.size()) {
    MatchRange m;
    absl::StatusOr<bool> found = Search(subject, next, &m, data);
    if (!found.ok()) {
      status = found.status();
      break;
    }
    if (!*found) break;
    if (m.first == m.second && m.second == last_match_end) {
      // onig::FindMatches: no empty match right after the previous one; step one character.
      next += next < subject.size() ? Utf8Length(static_cast<unsigned char>(subject[next])) : 1;
      continue;
    }
    next = m.second;
    last_match_end = m.second;
    matches.push_back(m);
  }
  pcre2_match_data_free(data);
  if (!status.ok()) return status;
  return matches;
}

}  // namespace engram::tokenizer_internal
