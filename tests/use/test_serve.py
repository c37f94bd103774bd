"""`edgetune serve` with the real openai client against a running server on the demo-style model:
streamed and not, the temperature-0 answer equal to `edgetune chat`'s, /v1/completions, 8 concurrent
requests all answered, a wrong key 401, an oversized prompt 400 naming the limit, gone after SIGTERM."""
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgetune import serve as serve_mod
from edgetune.use.chat import shown

openai = pytest.importorskip("openai")
KEY = "sesame"
CTX = 256
MODEL = "tiny-F16"  # a file is served under its stem


@pytest.fixture(scope="module")
def tiny_gguf(tiny_base, tmp_path_factory):
    from edgetune.convert import convert_hf_to_gguf
    return convert_hf_to_gguf(tiny_base, tmp_path_factory.mktemp("serve") / "tiny-F16.gguf", "f16")


@pytest.fixture(scope="module")
def server(tiny_gguf, tmp_path_factory):
    port = serve_mod.free_port("127.0.0.1", 18123)
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    proc = serve_mod.ServerProcess(serve_mod.Target(tiny_gguf, MODEL), port=port, api_key=KEY, threads=2, log=log)
    # the test's own context limit: start it through the CLI as a user would
    cmd = [sys.executable, "-m", "edgetune", "serve", str(tiny_gguf), "--port", str(port), "--api-key", KEY,
           "--threads", "2", "--ctx", str(CTX)]
    proc.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    import time
    deadline = time.monotonic() + 180
    while not serve_mod.answers(proc.url):
        assert proc.proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    yield proc
    proc.stop()


def client(server, key=KEY):
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)


QUESTION = "the last word of red fox tiger is"


def test_models_chat_streamed_and_not_equal_to_edgetune_chat(server, tiny_gguf, tmp_path):
    c = client(server)
    assert [m.id for m in c.models.list().data] == [MODEL]
    whole = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                      temperature=0, max_tokens=8)
    answer = whole.choices[0].message.content
    assert whole.usage.completion_tokens <= 8
    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                       temperature=0, max_tokens=8, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == answer
    text = c.completions.create(model=MODEL, prompt="red fox tiger", temperature=0, max_tokens=4)
    assert text.choices[0].finish_reason in ("length", "stop")
    cli = subprocess.run([sys.executable, "-m", "edgetune", "chat", str(tiny_gguf), "--temperature", "0",
                          "--max-tokens", "8", "--threads", "2"], input=QUESTION + "\n\n", capture_output=True,
                         text=True, timeout=300, env={**os.environ, "EDGETUNE_CACHE": str(tmp_path)})
    assert cli.returncode == 0, cli.stderr
    reply = cli.stdout.split("/help lists the commands.\n", 1)[1].rsplit("\n  [", 1)[0]
    reply = reply.removeprefix("> ").removeprefix("... ")  # input()'s prompts, on a pipe
    assert reply == shown(answer)


def test_eight_concurrent_requests_are_all_answered(server):
    c = client(server)

    def ask(i):
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"{QUESTION} {i}"}],
                                      temperature=0, max_tokens=6, stream=i % 2 == 0)
        if i % 2 == 0:
            return [chunk for chunk in r if chunk.choices and chunk.choices[0].finish_reason][-1].choices[0].finish_reason
        return r.choices[0].finish_reason
    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(ask, range(8)))
    assert len(reasons) == 8 and all(r in ("length", "stop") for r in reasons)


def test_wrong_key_is_401_and_an_oversized_prompt_is_400_naming_the_limit(server):
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, key="wrong").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model=MODEL, max_tokens=8,
                                               messages=[{"role": "user", "content": "red fox tiger " * 200}])
    assert e.value.status_code == 400 and f"maximum context length is {CTX} tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:  # streamed too: a 400, not a stream cut short
        client(server).chat.completions.create(model=MODEL, max_tokens=8, stream=True,
                                               messages=[{"role": "user", "content": "red fox tiger " * 200}])
    assert e.value.status_code == 400 and f"maximum context length is {CTX} tokens" in str(e.value)


def test_sigterm_stops_it_and_frees_the_port(tiny_gguf, tmp_path):
    port = serve_mod.free_port("127.0.0.1", 18200)
    proc = serve_mod.ServerProcess(serve_mod.Target(tiny_gguf, MODEL), port=port, threads=2, log=tmp_path / "log")
    proc.start(timeout=180)
    assert not serve_mod.port_free("127.0.0.1", port)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(60) == 0, (tmp_path / "log").read_text()
    assert serve_mod.port_free("127.0.0.1", port) and not serve_mod.answers(proc.url)
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_serve_refuses_what_it_cannot_serve(tmp_path):
    with pytest.raises(serve_mod.EdgetuneError, match="no such file or run folder"):
        serve_mod.resolve(tmp_path / "nope.gguf")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text("name: run\n")
    with pytest.raises(serve_mod.EdgetuneError, match="no GGUF file yet"):
        serve_mod.resolve(tmp_path / "run")
    line = serve_mod.curl_line("127.0.0.1", 8000, "run", "k")
    assert line.startswith("curl http://127.0.0.1:8000/v1/chat/completions") and "Bearer k" in line
