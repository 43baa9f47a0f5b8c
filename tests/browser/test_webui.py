"""The web app in a real browser (Debian's Chromium, headless, driven by Playwright) against the
real stack: the whole flow of a person using parley, resilience of streamed answers, errors, and
screenshots of the main screens. Every wait is on the page's state, never a fixed sleep.

The served files themselves (types, caching, path safety, the share page) are checked over
plain HTTP in test_static.py.
"""

import re
import time

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD, call, new_email, signup_api

LONG_PROMPT = ("Write a very long and detailed story about a dragon who learns to bake bread in a "
               "small village, with many chapters.")


def letters(text):
    return re.sub(r"[^A-Za-z]", "", text)


def answers(page):
    return page.locator("article.msg.assistant")


def last_answer(page):
    return answers(page).last


def signup_ui(page, base, email=None):
    page.goto(base + "/")
    page.get_by_role("tab", name="Sign up").click()
    page.get_by_label("Email").fill(email or new_email())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#model option")).not_to_have_count(0)


def set_max_tokens(page, n):
    page.get_by_role("button", name="Settings").click()
    page.get_by_label("Longest answer").fill(str(n))
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#settings-dialog")).not_to_be_visible()


def send(page, text):
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def wait_answer_done(page, timeout=90000):
    """Waits until no answer is streaming and the last answer shows its tools."""
    expect(page.locator("#stop")).to_be_hidden(timeout=timeout)
    expect(last_answer(page).locator(".msg-tools")).to_be_visible(timeout=timeout)


def wait_text(page, min_chars, timeout=60000):
    page.wait_for_function(
        """n => { const a = [...document.querySelectorAll('article.msg.assistant')].pop();
                 return a && a.querySelector('.msg-body').textContent.length >= n; }""",
        arg=min_chars, timeout=timeout)


def api_conv(page, base, conv_id):
    r = page.request.get(f"{base}/api/v1/conversations/{conv_id}")
    assert r.ok, r.text()
    return r.json()


def current_conv_id(page):
    m = re.search(r"[?&]c=([0-9a-f]+)", page.url)
    assert m, page.url
    return m.group(1)


# --- the full flow (item 9 of the issue) -------------------------------------------------------

@pytest.mark.timeout(420)
def test_full_flow(new_page, base_url, browser):
    page = new_page()
    signup_ui(page, base_url)
    set_max_tokens(page, 400)

    # New chat → a streamed answer, rendered as Markdown while it arrives.
    page.get_by_role("button", name="+ New chat").click()
    page.evaluate("""() => { window.__lengths = []; new MutationObserver(() => {
        const a = [...document.querySelectorAll('article.msg.assistant')].pop();
        if (a && a.dataset.status === 'pending') window.__lengths.push(a.querySelector('.msg-body').textContent.length);
      }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); }""")
    send(page, "List three fruits as a Markdown bullet list.")
    expect(page.locator("#stop")).to_be_visible()
    wait_answer_done(page)
    lengths = page.evaluate("window.__lengths")
    assert len(set(x for x in lengths if x > 0)) >= 2, f"the answer did not stream: {lengths}"
    first_answer = last_answer(page)
    expect(first_answer.locator(".msg-body > *").first).to_be_visible()  # rendered elements
    assert page.locator("article.msg.user").count() == 1
    conv_id = current_conv_id(page)
    expect(page.locator(f".conv-item[data-id='{conv_id}']")).to_have_class(re.compile("current"))

    # Stop mid-answer: the partial answer is kept, marked stopped.
    send(page, LONG_PROMPT)
    wait_text(page, 40)
    page.get_by_role("button", name="Stop generating").click()
    wait_answer_done(page)
    stopped = last_answer(page)
    expect(stopped).to_have_attribute("data-status", "stopped")
    expect(stopped.locator(".msg-note")).to_have_text("Stopped.")
    stopped_text = stopped.locator(".msg-body").inner_text()
    assert len(stopped_text) >= 20
    stored = api_conv(page, base_url, conv_id)["messages"][-1]
    assert stored["status"] == "stopped" and stored["content"].strip()

    # Regenerate, then switch between the two versions.
    stopped.get_by_role("button", name="Regenerate answer").click()
    expect(page.locator("#stop")).to_be_visible()
    wait_text(page, 40)
    page.get_by_role("button", name="Stop generating").click()  # keep the test short
    wait_answer_done(page)
    pager = last_answer(page).locator(".pager")
    expect(pager.locator(".pager-pos")).to_have_text("2/2")
    pager.get_by_role("button", name="Previous version").click()
    expect(last_answer(page).locator(".pager-pos")).to_have_text("1/2")
    assert last_answer(page).locator(".msg-body").inner_text() == stopped_text
    last_answer(page).get_by_role("button", name="Next version").click()
    expect(last_answer(page).locator(".pager-pos")).to_have_text("2/2")

    # Edit the first message: a new branch; switch back and forth between the branches.
    first_user = page.locator("article.msg.user").first
    first_user.get_by_role("button", name="Edit message").click()
    edit = page.get_by_label("Edit your message")
    edit.fill("Name two colors.")
    edit.press("Enter")
    wait_answer_done(page)
    expect(page.locator("article.msg.user")).to_have_count(1)
    user_msg = page.locator("article.msg.user").first
    expect(user_msg.locator(".msg-body")).to_have_text("Name two colors.")
    expect(user_msg.locator(".pager-pos")).to_have_text("2/2")
    user_msg.get_by_role("button", name="Previous branch").click()
    expect(page.locator("article.msg.user")).to_have_count(2)
    expect(page.locator("article.msg.user").first.locator(".pager-pos")).to_have_text("1/2")
    expect(page.locator("article.msg.user").first.locator(".msg-body")).to_have_text(
        "List three fruits as a Markdown bullet list.")
    page.locator("article.msg.user").first.get_by_role("button", name="Next branch").click()
    expect(page.locator("article.msg.user")).to_have_count(1)

    # Thumbs up is stored with the message (still pressed after a reload).
    last_answer(page).get_by_role("button", name="Good answer").click()
    expect(last_answer(page).get_by_role("button", name="Good answer")).to_have_attribute(
        "aria-pressed", "true")
    page.reload()
    expect(last_answer(page).get_by_role("button", name="Good answer")).to_have_attribute(
        "aria-pressed", "true")

    # Rename from the sidebar.
    item = page.locator(f".conv-item[data-id='{conv_id}']")
    item.get_by_role("button", name=re.compile("^Rename chat")).click()
    rename = page.get_by_label("New title")
    rename.fill("Dragon bakery notes")
    rename.press("Enter")
    expect(item.locator(".conv-open")).to_have_text("Dragon bakery notes")
    expect(page.locator("#chat-title")).to_have_text("Dragon bakery notes")

    # Search: by title, and a miss.
    page.get_by_role("button", name="+ New chat").click()
    search = page.get_by_label("Search conversations")
    search.fill("bakery")
    expect(page.locator(".conv-item")).to_have_count(1)
    expect(page.locator(".conv-item .conv-open")).to_have_text("Dragon bakery notes")
    search.fill("zzqqxxnotthere")
    expect(page.locator("#conv-empty")).to_have_text("No chat matches.")
    search.fill("")
    expect(page.locator(f".conv-item[data-id='{conv_id}']")).to_be_visible()
    page.locator(f".conv-item[data-id='{conv_id}'] .conv-open").click()
    expect(page.locator("#chat-title")).to_have_text("Dragon bakery notes")

    # Share: create a link, copy it.
    page.get_by_role("button", name="Share", exact=True).click()
    page.get_by_role("button", name="Create link").click()
    url_box = page.get_by_label("Link", exact=True)
    expect(url_box).to_have_value(re.compile(r"/s/[A-Za-z0-9_-]{43}$"))
    link = url_box.input_value()
    page.get_by_role("button", name="Copy link").click()
    expect(page.locator("#toast")).to_have_text("Link copied")
    assert page.evaluate("navigator.clipboard.readText()") == link
    expect(page.locator("#share-list .share-item")).to_have_count(1)

    # The shared page, logged out: read-only, rendered.
    viewer = new_page()
    viewer.goto(link)
    expect(viewer.locator("#shared-title")).to_have_text("Dragon bakery notes")
    expect(viewer.locator("#shared-messages article.msg.user")).to_have_count(1)
    expect(viewer.locator("#shared-messages article.msg.assistant")).to_have_count(1)
    expect(viewer.locator("#shared-messages")).to_contain_text("Name two colors.")
    assert viewer.locator("textarea, #composer").count() == 0
    assert not viewer.errors, viewer.errors

    # Revoke: the list empties and the link is gone.
    page.locator("#share-list").get_by_role("button", name=re.compile("^Revoke")).click()
    expect(page.locator("#share-list .share-item")).to_have_count(0)
    page.get_by_role("button", name="Close").click()
    viewer.reload()
    expect(viewer.locator("#shared-error")).to_contain_text("does not exist or was unshared")
    r = viewer.request.get(link, headers={"Accept": "application/json"})
    assert r.status == 404

    # Delete, with confirmation.
    page.locator(f".conv-item[data-id='{conv_id}']").get_by_role(
        "button", name=re.compile("^Delete chat")).click()
    page.locator("#confirm-ok").click()
    expect(page.locator(f".conv-item[data-id='{conv_id}']")).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("New chat")
    assert not page.errors, page.errors


# --- resilience --------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_reload_mid_answer_resumes_with_last_event_id(new_page, base_url):
    page = new_page()
    signup_ui(page, base_url)
    set_max_tokens(page, 400)
    send(page, LONG_PROMPT)
    wait_text(page, 60)
    conv_id = current_conv_id(page)
    resumes = []
    page.on("request", lambda r: resumes.append(r.headers.get("last-event-id"))
            if r.url.endswith("/stream") else None)
    page.reload()
    # The answer goes on in the reloaded page, from where it was.
    expect(page.locator("#stop")).to_be_visible()
    wait_answer_done(page, timeout=120000)
    assert resumes and resumes[0] and int(resumes[0]) > 0, resumes
    shown = last_answer(page).locator(".msg-body").inner_text()
    stored = api_conv(page, base_url, conv_id)["messages"][-1]
    assert stored["status"] in ("complete", "stopped"), stored
    assert len(shown) > 60
    # No gap, no duplicate: the page shows the stored answer (as Markdown drops some
    # punctuation, compare the letters, in order).
    assert letters(shown) == letters(stored["content"])
    assert not page.errors, page.errors


@pytest.mark.timeout(240)
def test_leaving_and_reopening_a_chat_mid_answer(new_page, base_url):
    page = new_page()
    signup_ui(page, base_url)
    set_max_tokens(page, 300)
    send(page, LONG_PROMPT)
    wait_text(page, 30)
    conv_id = current_conv_id(page)
    # Another chat can be started while the answer goes on at the server.
    page.get_by_role("button", name="+ New chat").click()
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("article.msg")).to_have_count(0)
    page.locator(f".conv-item[data-id='{conv_id}'] .conv-open").click()
    wait_answer_done(page, timeout=120000)
    stored = api_conv(page, base_url, conv_id)["messages"][-1]
    assert stored["status"] == "complete", stored
    assert letters(last_answer(page).locator(".msg-body").inner_text()) == letters(stored["content"])
    assert not page.errors, page.errors


# Cuts the first answer stream after about 600 bytes, as a dropped connection would: the
# reader gets a network error while the answer goes on at the server.
CUT_STREAM = """
(() => {
  const realFetch = window.fetch;
  let cut = true;
  window.fetch = async (input, init) => {
    const resp = await realFetch(input, init);
    const url = typeof input === 'string' ? input : input.url;
    if (cut && init && init.method === 'POST' && /\\/messages$/.test(url) && resp.ok && resp.body) {
      cut = false;
      const reader = resp.body.getReader();
      let seen = 0;
      const body = new ReadableStream({ async pull(ctl) {
        const { value, done } = await reader.read();
        if (done) { ctl.close(); return; }
        seen += value.length;
        ctl.enqueue(value);
        if (seen > 600) { window.__cut = true; reader.cancel(); ctl.error(new TypeError('network error (test)')); }
      } });
      return new Response(body, { status: resp.status, headers: resp.headers });
    }
    return resp;
  };
})();
"""


@pytest.mark.timeout(240)
def test_dropped_connection_resumes(new_page, base_url):
    page = new_page()
    page.add_init_script(CUT_STREAM)
    signup_ui(page, base_url)
    set_max_tokens(page, 300)
    resumes = []
    page.on("request", lambda r: resumes.append(r.headers.get("last-event-id"))
            if r.url.endswith("/stream") else None)
    send(page, LONG_PROMPT)
    wait_answer_done(page, timeout=120000)
    assert page.evaluate("window.__cut") is True, "the stream was not cut"
    assert resumes and resumes[0] and int(resumes[0]) > 0, resumes
    expect(page.locator("#banner")).to_be_hidden()
    stored = api_conv(page, base_url, current_conv_id(page))["messages"][-1]
    assert stored["status"] == "complete", stored
    # Markdown drops some punctuation; the letters must be the same, in the same order.
    assert letters(last_answer(page).locator(".msg-body").inner_text()) == letters(stored["content"])
    assert not page.errors, page.errors


# --- accounts ------------------------------------------------------------------------------------

def test_account_errors(new_page, base_url):
    email = new_email()
    signup_api(base_url, email)
    page = new_page()
    page.goto(base_url + "/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#auth-error")).to_have_text("Wrong email or password.")
    # Sign-up with a taken email.
    page.get_by_role("tab", name="Sign up").click()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#auth-error")).to_contain_text("already exists")
    # Repeated failures: rate-limited, with the wait.
    page.get_by_role("tab", name="Log in").click()
    page.get_by_label("Password").fill("wrong password!")
    for _ in range(6):
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#auth-submit")).to_be_enabled()
    expect(page.locator("#auth-error")).to_contain_text("Too many failed log-ins. Try again in")
    # Closed sign-up (answered as a gateway started with --signup-open=false would).
    page.route("**/api/v1/auth/signup", lambda route: route.fulfill(
        status=403, content_type="application/json",
        body='{"error":{"message":"sign-up is closed","type":"permission_error",'
             '"param":null,"code":"signup_closed"}}'))
    page.get_by_role("tab", name="Sign up").click()
    page.get_by_label("Email").fill(new_email())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#auth-error")).to_contain_text("Sign-up is closed")


def test_login_logout_and_custom_instructions(new_page, base_url):
    email = new_email()
    signup_api(base_url, email)
    page = new_page()
    page.goto(base_url + "/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_contain_text(email)
    page.get_by_role("button", name="Settings").click()
    page.get_by_label("Custom instructions").fill("Answer like a pirate.")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#toast")).to_have_text("Settings saved")
    me = page.request.get(base_url + "/api/v1/me").json()
    assert me["user"]["custom_instructions"] == "Answer like a pirate."
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#auth")).to_be_visible()
    assert page.request.get(base_url + "/api/v1/me").status == 401
    page.reload()
    expect(page.locator("#auth")).to_be_visible()


# --- limits, models ----------------------------------------------------------------------------

def test_rate_limit_and_quota_shown(new_page, base_url, admin):
    status, _, _ = call(base_url, "PUT", "/api/v1/admin/tiers/webtest-tiny",
                        {"context_window": 2048, "requests_per_minute": 1,
                         "tokens_per_day": 20000, "max_tokens": 16}, admin)
    assert status == 200
    token, user = signup_api(base_url)
    status, _, _ = call(base_url, "PATCH", f"/api/v1/admin/users/{user['id']}",
                        {"tier": "webtest-tiny"}, admin)
    assert status == 200
    # The request window is the UTC minute: start early in one so that both turns fall in it.
    while time.time() % 60 > 35:
        time.sleep(0.5)
    page = new_page(token=token, base=base_url)
    page.goto(base_url + "/")
    expect(page.locator("#quota")).to_contain_text("1/1 requests this minute")
    send(page, "Hi")
    wait_answer_done(page)
    expect(page.locator("#quota")).to_contain_text("0/1 requests this minute")
    send(page, "Hi again")
    expect(page.locator("#banner")).to_contain_text(
        re.compile(r"You have reached your per-minute request limit\. It resets at .* \(in \d+ s\)"))
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator(".typing")).to_have_count(0)  # no spinner left turning
    # The refused message is back in the box, not lost.
    expect(page.get_by_label("Message", exact=True)).to_have_value("Hi again")


def test_model_picker_follows_the_tier(new_page, base_url, admin):
    status, body, _ = call(base_url, "PUT", "/api/v1/admin/tiers/webtest-nomodel",
                           {"context_window": 2048, "requests_per_minute": 10,
                            "tokens_per_day": 20000, "max_tokens": 64,
                            "models": ["some-other-model"]}, admin)
    assert status == 200, body
    token, user = signup_api(base_url)
    status, body, _ = call(base_url, "GET", "/api/v1/models", token=token)
    assert status == 200 and [m["id"] for m in body["data"]] == ["smollm2-135m"]
    page = new_page(token=token, base=base_url)
    page.goto(base_url + "/")
    expect(page.locator("#model option")).to_have_count(1)
    call(base_url, "PATCH", f"/api/v1/admin/users/{user['id']}", {"tier": "webtest-nomodel"}, admin)
    status, body, _ = call(base_url, "GET", "/api/v1/models", token=token)
    assert status == 200 and body["data"] == [] and body["tier"] == "webtest-nomodel"
    page.reload()
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#model option")).to_have_count(0)
    expect(page.locator("#model")).to_be_disabled()


# --- sidebar -----------------------------------------------------------------------------------

def test_sidebar_loads_more_on_scroll(new_page, base_url):
    token, _ = signup_api(base_url)
    for i in range(23):
        status, _, _ = call(base_url, "POST", "/api/v1/conversations", {"title": f"Chat {i:02d}"},
                            token)
        assert status == 201
    page = new_page(token=token, base=base_url, height=700)
    page.goto(base_url + "/")
    expect(page.locator(".conv-item")).to_have_count(20)
    expect(page.locator(".conv-item .conv-open").first).to_have_text("Chat 22")  # newest first
    page.locator("#conv-list-wrap").evaluate("e => e.scrollTop = e.scrollHeight")
    expect(page.locator(".conv-item")).to_have_count(23)
    expect(page.locator(".conv-item .conv-open").last).to_have_text("Chat 00")


def test_message_sent_while_a_chat_opens_goes_to_that_chat(new_page, base_url):
    token, _ = signup_api(base_url)
    status, conv, _ = call(base_url, "POST", "/api/v1/conversations", {"title": "Opened"}, token)
    assert status == 201
    page = new_page(token=token, base=base_url)
    page.route("**/api/v1/conversations/*", lambda route: (
        page.wait_for_timeout(1500) if route.request.method == "GET" else None,
        route.continue_())[1])  # a slow open
    page.goto(f"{base_url}/?c={conv['id']}")
    send(page, "Hello there")
    wait_answer_done(page)
    assert current_conv_id(page) == conv["id"]
    status, full, _ = call(base_url, "GET", f"/api/v1/conversations/{conv['id']}", token=token)
    assert [m["content"] for m in full["messages"]][:1] == ["Hello there"]
    status, lst, _ = call(base_url, "GET", "/api/v1/conversations", token=token)
    assert len(lst["data"]) == 1, "the message started another conversation"


# --- attachments -------------------------------------------------------------------------------

def test_attachments(new_page, base_url):
    page = new_page()
    signup_ui(page, base_url)
    files = page.locator("#file-input")
    files.set_input_files([{"name": "notes.txt", "mimeType": "text/plain",
                            "buffer": b"The secret word is marmalade.\n"}])
    expect(page.locator("#attachments .file-chip")).to_have_text("notes.txt")
    files.set_input_files([{"name": "big.txt", "mimeType": "text/plain",
                            "buffer": b"x" * (600 * 1024)}])
    expect(page.locator("#attachments .file-chip.bad")).to_contain_text("big.txt: too big")
    files.set_input_files([{"name": "photo.png", "mimeType": "image/png",
                            "buffer": b"\x89PNG\r\n\x1a\n" + b"\0" * 64}])
    expect(page.locator("#attachments .file-chip.bad").last).to_contain_text(
        "photo.png: not a supported type")
    # Sending is refused while a failed file is still listed; remove the two bad ones.
    send(page, "What is the secret word?")
    expect(page.locator("#banner")).to_contain_text("Remove the files")
    page.get_by_role("button", name="Remove big.txt").click()
    page.get_by_role("button", name="Remove photo.png").click()
    page.get_by_label("Message", exact=True).press("Enter")
    wait_answer_done(page)
    user = page.locator("article.msg.user").first
    expect(user.locator(".msg-files .file-chip")).to_have_text("notes.txt")
    stored = api_conv(page, base_url, current_conv_id(page))["messages"][0]
    assert len(stored["upload_ids"]) == 1


# --- rendering ---------------------------------------------------------------------------------

def test_markdown_rendering_is_highlighted_and_sanitised(new_page, base_url):
    page = new_page()
    page.goto(base_url + "/")
    expect(page.locator("#auth")).to_be_visible()
    html = page.evaluate("""async () => {
        const { renderMarkdown } = await import('/static/markdown.js');
        const el = document.createElement('div');
        document.body.append(el);
        renderMarkdown(el, [
          '# Title', '', '| a | b |', '|---|---|', '| 1 | 2 |', '',
          '```python', 'def f(x):', '    return x + 1', '```', '',
          '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>',
          '[link](javascript:window.__pwned=3)',
        ].join('\\n'));
        return el.innerHTML; }""")
    assert "<h1" in html and "<table" in html and "<td>1</td>" in html
    assert "hljs-keyword" in html, "the code block was not highlighted"
    assert "Copy code" in html
    assert "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert page.evaluate("window.__pwned") is None
    # The code block's copy button puts the code, and only the code, on the clipboard.
    page.get_by_role("button", name="Copy python code").click()
    expect(page.get_by_role("button", name="Copy python code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "def f(x):\n    return x + 1\n"
    assert not page.errors, page.errors


# --- look and feel: phone layout, screenshots -------------------------------------------------

@pytest.mark.timeout(300)
def test_screenshots(new_page, base_url, shots):
    token, _ = signup_api(base_url)
    status, conv, _ = call(base_url, "POST", "/api/v1/conversations", {"title": "Screenshot chat"},
                           token)
    assert status == 201
    boot = new_page(token=token, base=base_url)
    boot.goto(f"{base_url}/?c={conv['id']}")
    expect(boot.locator("#chat-title")).to_have_text("Screenshot chat")
    send(boot, "Write a haiku about the sea, then a Python function that adds two numbers.")
    wait_answer_done(boot)
    # The answer is saved a moment after its stream ends; share it once it is.
    deadline = time.time() + 30
    while True:
        status, full, _ = call(base_url, "GET", f"/api/v1/conversations/{conv['id']}", token=token)
        assert status == 200, full
        if full["messages"][-1]["status"] != "pending" or time.time() > deadline:
            break
        time.sleep(0.2)
    status, share, _ = call(base_url, "POST", f"/api/v1/conversations/{conv['id']}/shares", {},
                            token)
    assert status == 201, (share, full)
    sizes = {"desktop": (1280, 800), "phone": (390, 844)}
    for scheme in ("light", "dark"):
        for name, (w, h) in sizes.items():
            anon = new_page(width=w, height=h, scheme=scheme)
            anon.goto(base_url + "/")
            expect(anon.locator("#auth")).to_be_visible()
            anon.screenshot(path=str(shots / f"login-{name}-{scheme}.png"))
            anon.goto(base_url + share["url"])
            expect(anon.locator("#shared-messages article")).to_have_count(2)
            anon.screenshot(path=str(shots / f"shared-{name}-{scheme}.png"), full_page=True)

            page = new_page(width=w, height=h, scheme=scheme, token=token, base=base_url)
            page.goto(f"{base_url}/?c={conv['id']}")
            expect(last_answer(page).locator(".msg-tools")).to_be_visible()
            bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert (bg == "rgb(255, 255, 255)") == (scheme == "light"), bg
            page.screenshot(path=str(shots / f"chat-{name}-{scheme}.png"))
            if name == "phone":
                expect(page.locator("#sidebar")).not_to_be_in_viewport()
                page.get_by_role("button", name="Open the conversation list").click()
                expect(page.locator("#sidebar")).to_be_in_viewport()
                page.screenshot(path=str(shots / f"sidebar-{name}-{scheme}.png"))
                page.get_by_role("button", name="Close the conversation list").click()
                expect(page.locator("#sidebar")).not_to_be_in_viewport()
            page.get_by_role("button", name="Share", exact=True).click()
            expect(page.locator("#share-dialog")).to_be_visible()
            page.screenshot(path=str(shots / f"share-{name}-{scheme}.png"))
            page.context.close()
    assert len(list(shots.glob("*-light.png"))) >= 8 and len(list(shots.glob("*-dark.png"))) >= 8


def test_keyboard_and_labels(new_page, base_url):
    page = new_page()
    signup_ui(page, base_url)
    # Every button and form field has an accessible name.
    unnamed = page.evaluate("""() => [...document.querySelectorAll('button, input, select, textarea')]
        .filter(e => e.offsetParent !== null && e.type !== 'hidden')
        .filter(e => !(e.getAttribute('aria-label') || e.labels?.length || e.textContent.trim()))
        .map(e => e.outerHTML.slice(0, 80))""")
    assert unnamed == []
    # Shift+Enter adds a line; Enter sends.
    box = page.get_by_label("Message", exact=True)
    box.click()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert box.input_value() == "line one\nline two"
    page.keyboard.press("Enter")
    expect(page.locator("article.msg.user .msg-body")).to_have_text("line one\nline two")
    wait_answer_done(page)
    # Copy a message.
    page.locator("article.msg.user").get_by_role("button", name="Copy message").click()
    expect(page.locator("#toast")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "line one\nline two"
    # The first Tab reaches the skip link, which leads to the message box.
    page.reload()
    expect(page.locator("#app")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(box).to_be_focused()
