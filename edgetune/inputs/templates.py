"""Chat templates: which one a run trains with, and the same template for every consumer.

A template is the single source of the token ids a model is trained on. Training renders each row
through it and tokenizes the text with add_special_tokens=False; the merged folder and the GGUF carry
the same Jinja text; llama-cpp-python renders it and tokenizes without adding BOS; HF's
apply_chat_template does the same. So BOS lives *in* the template (`{{ bos_token }}` first) exactly
when the tokenizer adds one, and nowhere else: then every path sees the same ids, BOS exactly once.

Ollama renders a Go template of its own (`TEMPLATE` in the Modelfile) and adds BOS itself from the
GGUF's add_bos flag, so the Go form of each named template is the Jinja text minus the leading BOS.

data.template: auto | model | alpaca | chatml | gemma | llama3 | <path to a .jinja file>
  auto   the model's own template; without one the family template whose special tokens the
         vocabulary already has (gemma, llama3, chatml); else alpaca, which needs no new tokens.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgetune.errors import EdgetuneError


@dataclass(frozen=True)
class Template:
    name: str
    jinja: str  # without BOS: `with_bos` adds it for tokenizers that use one
    go: str  # Ollama's TEMPLATE; "{eos}" stands for the model's EOS text
    needs: tuple[str, ...]  # special tokens that must be in the vocabulary
    turn_end: str  # text that closes an assistant turn ("{eos}": the EOS token)


TEMPLATES = {t.name: t for t in (
    Template(
        "alpaca",
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}",
        '{{ range .Messages }}{{ if eq .Role "system" }}{{ .Content }}\n\n'
        '{{ else if eq .Role "user" }}### Instruction:\n{{ .Content }}\n\n'
        '{{ else if eq .Role "assistant" }}### Response:\n{{ .Content }}{eos}\n\n'
        '{{ end }}{{ end }}### Response:\n',
        (), "{eos}"),
    Template(
        "chatml",
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        '{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n',
        ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
    # Gemma has no system role: the system text opens the first user turn, as Google's template does.
    Template(
        "gemma",
        "{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + '\n\n' %}"
        "{% set turns = messages[1:] %}{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
        "{% for message in turns %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content'] + '<end_of_turn>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
        '{{ $system := "" }}{{ range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}'
        '{{ else if eq .Role "user" }}<start_of_turn>user\n{{ if $system }}{{ $system }}\n\n{{ end }}'
        '{{ $system = "" }}{{ .Content }}<end_of_turn>\n'
        '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
        '{{ end }}{{ end }}<start_of_turn>model\n',
        ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>"),
    Template(
        "llama3",
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        '{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}'
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "<|eot_id|>"),
)}
AUTO_ORDER = ("gemma", "llama3", "chatml")  # family templates `auto` may pick for a base without one
CHOICES = ("auto", "model", *TEMPLATES)

# Conversations every template must render alike on every path (smoke test and tests).
PROBES = {
    "one turn": [{"role": "user", "content": "Name a colour."}],
    "one turn + system": [{"role": "system", "content": "Answer in one word."},
                          {"role": "user", "content": "Name a colour."}],
    "two turns": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue"},
                  {"role": "user", "content": "Another one?"}],
    "two turns + system": [{"role": "system", "content": "Answer in one word."},
                           {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue"},
                           {"role": "user", "content": "Another one?"}],
}


@dataclass
class Chosen:
    """The template a run trains with, ready to store in the tokenizer."""

    name: str  # a TEMPLATES name, "model" or the .jinja path
    jinja: str  # BOS included where the tokenizer uses one
    turn_end: str  # the text after which an assistant turn is over (a special token)
    reason: str  # one line for the log and the wizard


def adds_bos(tokenizer) -> bool:
    """Does this tokenizer put BOS in front of plain text? (The one BOS probe in edgetune.)"""
    if tokenizer.bos_token_id is None:
        return False
    probe = tokenizer("a")["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id


def render(jinja: str, messages: list[dict], tokenizer, add_generation_prompt: bool) -> str:
    """The text of a conversation under `jinja`, as HF and llama-cpp-python both render it
    (sandboxed Jinja, trim_blocks and lstrip_blocks, bos_token/eos_token as text)."""
    try:
        return _compiled(jinja).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "")
    except jinja2.TemplateError as e:
        raise EdgetuneError(f"chat template: {e}") from None


@functools.lru_cache(maxsize=16)
def _compiled(jinja: str) -> jinja2.Template:
    """Compiling a template costs ~3 ms, rendering a row ~0.1 ms: compile once per template, not per row."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
    env.globals["raise_exception"] = _raise
    return env.from_string(jinja)


def _raise(message: str):
    raise jinja2.TemplateError(message)


def with_bos(jinja: str, tokenizer) -> str:
    """`jinja` that renders BOS first exactly when the tokenizer adds BOS to text."""
    if not adds_bos(tokenizer):
        return jinja
    text = render(jinja, PROBES["one turn"], tokenizer, True)
    return jinja if text.startswith(tokenizer.bos_token) else "{{ bos_token }}" + jinja


def choose(spec: str, tokenizer, base: str = "the base model") -> Chosen:
    """The template for `data.template` = spec on this tokenizer (`base` names it in errors)."""
    vocab = tokenizer.get_vocab()
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default one
        own = own.get("default")
    if spec == "auto":
        if own:
            return _model(own, tokenizer, "the model's own chat template")
        for name in AUTO_ORDER:
            if all(t in vocab for t in TEMPLATES[name].needs):
                return _named(name, tokenizer, f"{base} has no chat template; its vocabulary has the {name} "
                                               f"turn tokens")
        return _named("alpaca", tokenizer, f"{base} has no chat template and no turn tokens: alpaca "
                                           "(plain text markers, no new tokens)")
    if spec == "model":
        if not own:
            raise EdgetuneError(f"data.template: {base} has no chat template (choose one of "
                                f"{', '.join(TEMPLATES)}, or auto)")
        return _model(own, tokenizer, "the model's own chat template")
    if spec in TEMPLATES:
        missing = [t for t in TEMPLATES[spec].needs if t not in vocab]
        if missing:
            raise EdgetuneError(f"data.template: {spec} needs the tokens {', '.join(missing)}, which the "
                                f"vocabulary of {base} lacks (untrained tokens would break it); choose alpaca "
                                "or a template whose tokens exist")
        return _named(spec, tokenizer, "the template you chose")
    path = Path(spec).expanduser()
    if path.suffix != ".jinja":
        raise EdgetuneError(f"data.template: {spec!r} is not one of {', '.join(CHOICES)} or a .jinja file")
    if not path.is_file():
        raise EdgetuneError(f"data.template: {path}: no such file")
    chosen = _model(path.read_text(encoding="utf-8"), tokenizer, f"from {path}")
    chosen.name = str(path)
    return chosen


def _named(name: str, tokenizer, reason: str) -> Chosen:
    t = TEMPLATES[name]
    return Chosen(name, with_bos(t.jinja, tokenizer), t.turn_end.replace("{eos}", tokenizer.eos_token), reason)


def _model(jinja: str, tokenizer, reason: str) -> Chosen:
    """A template from the model or a file: probed for the text that ends an assistant turn."""
    jinja = with_bos(jinja, tokenizer)
    for name, t in TEMPLATES.items():  # a known one: its Go form and turn end apply
        if all(render(jinja, m, tokenizer, True) == render(with_bos(t.jinja, tokenizer), m, tokenizer, True)
               for m in PROBES.values()):
            return Chosen(name, jinja, t.turn_end.replace("{eos}", tokenizer.eos_token), f"{reason} ({name})")
    return Chosen("model", jinja, turn_end_of(jinja, tokenizer), reason)


def turn_end_of(jinja: str, tokenizer) -> str:
    """The special token that closes an assistant turn under `jinja` (what generation stops on)."""
    probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "ANSWER"}]
    text = render(jinja, probe, tokenizer, False)
    if "ANSWER" not in text:
        raise EdgetuneError("chat template: it does not render the assistant's reply")
    after = text[text.rindex("ANSWER") + len("ANSWER"):]
    specials = sorted(tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()), key=len, reverse=True)
    for token in specials:
        if token and after.lstrip().startswith(token):
            return token
    raise EdgetuneError(f"chat template: no special token closes the assistant's turn (it ends {after[:20]!r}), "
                        "so generation would never stop")


def split_turn(prompt: str, full: str, turn_end: str, where: str) -> str:
    """The completion text of a rendered conversation: what follows the prompt, up to and including
    the turn end (text a template writes after it, such as a newline, is not trained on)."""
    if not full.startswith(prompt):
        raise EdgetuneError(f"{where}: the chat template renders the history differently alone")
    completion = full[len(prompt):]
    end = completion.rfind(turn_end)
    if end < 0:
        raise EdgetuneError(f"{where}: the chat template does not close the reply with {turn_end!r}")
    return completion[: end + len(turn_end)]


def alpaca_messages(record: dict, template_name: str) -> list[dict]:
    """An alpaca row as a conversation. Under the alpaca template the input keeps its own header,
    so the rendered text is the seed guide's instruction format exactly."""
    user = record["instruction"]
    extra = (record.get("input") or "").strip() and record["input"]
    if extra:
        user += ("\n\n### Input:\n" if template_name == "alpaca" else "\n\n") + extra
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


# ---------------------------------------------------------------- Ollama

def go_template(chosen: Chosen, tokenizer) -> str | None:
    """The Modelfile TEMPLATE for a run's template, or None when Ollama cannot express it (then
    Ollama reads the chat template in the GGUF itself)."""
    t = TEMPLATES.get(chosen.name)
    if t is None or not t.go:
        return None
    return t.go.replace("{eos}", tokenizer.eos_token)


_GO_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


def render_go(template: str, messages: list[dict]) -> str:
    """Render the Go-template subset edgetune writes: text, {{ range .Messages }}, {{ if/else if
    eq .Role "x" }}, {{ if $v }}, {{ else }}, {{ end }}, {{ .Role }}, {{ .Content }}, and variables
    ({{ $v := "" }}, {{ $v = .Content }}, {{ $v }}). Anything else is an error, so a TEMPLATE we
    cannot check is never written."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for m in _GO_ACTION.finditer(template):
        if m.group(0).startswith("{{-") or m.group(0).endswith("-}}"):
            raise EdgetuneError("Modelfile TEMPLATE: trim markers are not used by edgetune")
        tokens.append(("text", template[pos:m.start()]))
        tokens.append(("action", m.group(1)))
        pos = m.end()
    tokens.append(("text", template[pos:]))
    tree, rest = _go_parse(tokens, 0)
    if rest != len(tokens):
        raise EdgetuneError("Modelfile TEMPLATE: unbalanced {{ end }}")
    return _go_exec(tree, {"Messages": messages}, {})


def _go_parse(tokens, i, stop=("end",)):
    """Nodes until an action in `stop`; returns (nodes, index of that action)."""
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        head = value.split()[0] if value else ""
        if value == "end" or value == "else" or value.startswith("else if "):
            if value.split()[0] in stop or value in stop:
                return nodes, i
            raise EdgetuneError(f"Modelfile TEMPLATE: unexpected {{{{ {value} }}}}")
        if head == "range":
            body, i = _go_parse(tokens, i + 1, ("end",))
            nodes.append(("range", value[len("range"):].strip(), body))
            i += 1
        elif head == "if":
            branches = []
            cond = value[len("if"):].strip()
            while True:
                body, i = _go_parse(tokens, i + 1, ("end", "else"))
                branches.append((cond, body))
                action = tokens[i][1]
                if action == "end":
                    break
                cond = action[len("else if"):].strip() if action.startswith("else if ") else None
            nodes.append(("if", branches))
            i += 1
        elif re.fullmatch(r"\.\w+", value):
            nodes.append(("field", value[1:]))
            i += 1
        elif m := re.fullmatch(r"\$(\w+)\s*:?=\s*(.+)", value):
            nodes.append(("assign", m.group(1), m.group(2)))
            i += 1
        elif re.fullmatch(r"\$\w+", value):
            nodes.append(("var", value[1:]))
            i += 1
        else:
            raise EdgetuneError(f"Modelfile TEMPLATE: {{{{ {value} }}}} is outside the subset edgetune writes")
    return nodes, i


def _go_exec(nodes, scope: dict, variables: dict) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            out.append(str(scope.get(node[1].capitalize(), "")))
        elif node[0] == "var":
            out.append(str(variables.get(node[1], "")))
        elif node[0] == "assign":
            variables[node[1]] = _go_value(node[2], scope)
        elif node[0] == "range":
            for item in scope.get(node[1].lstrip("."), []):
                out.append(_go_exec(node[2], {k.capitalize(): v for k, v in item.items()}, variables))
        else:
            for cond, body in node[1]:
                if cond is None or _go_true(cond, scope, variables):
                    out.append(_go_exec(body, scope, variables))
                    break
    return "".join(out)


def _go_value(expr: str, scope: dict) -> str:
    if re.fullmatch(r'"[^"\\]*"', expr):
        return expr[1:-1]
    if re.fullmatch(r"\.\w+", expr):
        return str(scope.get(expr[1:].capitalize(), ""))
    raise EdgetuneError(f"Modelfile TEMPLATE: value {expr!r} is outside the subset edgetune writes")


def _go_true(cond: str, scope: dict, variables: dict) -> bool:
    m = re.fullmatch(r'eq\s+\.(\w+)\s+"([^"]*)"', cond)
    if m:
        return str(scope.get(m.group(1).capitalize(), "")) == m.group(2)
    m = re.fullmatch(r"\.(\w+)", cond)
    if m:
        return bool(scope.get(m.group(1).capitalize()))
    m = re.fullmatch(r"\$(\w+)", cond)
    if m:
        return bool(variables.get(m.group(1)))
    raise EdgetuneError(f"Modelfile TEMPLATE: condition {cond!r} is outside the subset edgetune writes")
