#!/usr/bin/env python3
"""Writes tests/server/testdata/chat_template_golden.json: the chat templates the worker renders
(server/chat_template.cc), each rendered by jinja2 the way transformers' apply_chat_template does
(ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks) on a set of conversations.
chat_template_test checks that the worker recognises these exact sources and renders the same text.

  python3 tests/server/gen_chat_template_golden.py     (needs jinja2: Debian python3-jinja2)
"""
import json
import os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = {
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "chatml-default-system": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "and 3+3?"}],
    [{"role": "user", "content": "line one\nline two\n\n  indented {{ not jinja }} {% raw %}"}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "Grüße, 世界 🌍"}, {"role": "tool", "content": "{\"ok\": true}"}],
    [{"role": "assistant", "content": "I start."}, {"role": "system", "content": "late system"}],
]


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    cases = []
    for name, source in TEMPLATES.items():
        template = env.from_string(source)
        for messages in CONVERSATIONS:
            for add_generation_prompt in (True, False):
                cases.append({"template": name, "messages": messages,
                              "add_generation_prompt": add_generation_prompt,
                              "rendered": template.render(messages=messages,
                                                          add_generation_prompt=add_generation_prompt)})
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "chat_template_golden.json")
    with open(out, "w") as f:
        json.dump({"jinja2": jinja2.__version__, "templates": TEMPLATES, "cases": cases}, f,
                  indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
