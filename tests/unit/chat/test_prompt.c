/* test_prompt.c — the prompt of a turn within the context window (services/chat/prompt.c). */
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "prompt.h"

static Parley__V1__Message mk(Parley__V1__Message *m, const char *id, Parley__V1__Role role,
                              const char *content, Parley__V1__MessageStatus st)
{
    parley__v1__message__init(m);
    m->id = (char *)id;
    m->role = role;
    m->content = (char *)content;
    m->status = st;
    return *m;
}

#define U  PARLEY__V1__ROLE__ROLE_USER
#define A  PARLEY__V1__ROLE__ROLE_ASSISTANT
#define OK PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_COMPLETE

TEST(prompt_keeps_everything_that_fits_in_order_with_the_system_first)
{
    Parley__V1__Message m[4];
    mk(&m[0], "1", U, "hello", OK);
    mk(&m[1], "2", A, "hi there", OK);
    mk(&m[2], "3", U, "how are you", OK);
    mk(&m[3], "4", A, "fine", OK);
    Parley__V1__Message *chain[] = {&m[0], &m[1], &m[2], &m[3]};
    pr_input in = {.system = "be brief",
                   .chain = chain,
                   .n_chain = 4,
                   .new_user = "bye",
                   .window = 2048,
                   .answer = 256};
    pr_prompt p;
    CHECK_EQ_INT(pr_build(&in, &p), PL_OK);
    CHECK_EQ_INT(p.n, 6);
    CHECK_EQ_INT(p.msgs[0]->role, PARLEY__V1__ROLE__ROLE_SYSTEM);
    CHECK_STR(p.msgs[0]->content, "be brief");
    CHECK_STR(p.msgs[1]->content, "hello");
    CHECK_EQ_INT(p.msgs[2]->role, A);
    CHECK_STR(p.msgs[4]->content, "fine");
    CHECK_STR(p.msgs[5]->content, "bye");
    CHECK_EQ_INT(p.dropped, 0);
    uint32_t want = pr_estimate(8) + pr_estimate(5) + pr_estimate(8) + pr_estimate(11) +
                    pr_estimate(4) + pr_estimate(3);
    CHECK_EQ_INT(p.tokens, want);
    pr_free(&p);
    pr_free(&p); /* twice is harmless */
}

TEST(prompt_drops_the_oldest_turns_first_and_keeps_them_contiguous)
{
    static char big[3000];
    memset(big, 'x', sizeof big - 1);
    Parley__V1__Message m[4];
    mk(&m[0], "1", U, big, OK); /* ~1004 tokens */
    mk(&m[1], "2", A, "short answer", OK);
    mk(&m[2], "3", U, "second question", OK);
    mk(&m[3], "4", A, "second answer", OK);
    Parley__V1__Message *chain[] = {&m[0], &m[1], &m[2], &m[3]};
    pr_input in = {
        .chain = chain, .n_chain = 4, .new_user = "third", .window = 1000, .answer = 200};
    pr_prompt p;
    CHECK_EQ_INT(pr_build(&in, &p), PL_OK);
    CHECK_EQ_INT(p.n, 4); /* the big first message does not fit: it and only it is dropped */
    CHECK_STR(p.msgs[0]->content, "short answer");
    CHECK_STR(p.msgs[3]->content, "third");
    CHECK_EQ_INT(p.dropped, 1);
    CHECK(p.tokens <= 800);
    pr_free(&p);
}

TEST(prompt_skips_failed_and_pending_answers_but_keeps_stopped_ones)
{
    Parley__V1__Message m[4];
    mk(&m[0], "1", U, "q1", OK);
    mk(&m[1], "2", A, "", PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_FAILED);
    mk(&m[2], "3", U, "q2", OK);
    mk(&m[3], "4", A, "partial", PARLEY__V1__MESSAGE_STATUS__MESSAGE_STATUS_STOPPED);
    Parley__V1__Message *chain[] = {&m[0], &m[1], &m[2], &m[3]};
    pr_input in = {.chain = chain, .n_chain = 4, .new_user = "q3", .window = 4096, .answer = 64};
    pr_prompt p;
    CHECK_EQ_INT(pr_build(&in, &p), PL_OK);
    CHECK_EQ_INT(p.n, 4);
    CHECK_STR(p.msgs[0]->content, "q1");
    CHECK_STR(p.msgs[1]->content, "q2");
    CHECK_STR(p.msgs[2]->content, "partial");
    pr_free(&p);
}

TEST(prompt_regeneration_answers_the_chains_last_user_message_with_its_uploads)
{
    Parley__V1__Message m[3];
    mk(&m[0], "1", U, "q1", OK);
    mk(&m[1], "2", A, "a1", OK);
    mk(&m[2], "3", U, "read this", OK);
    Parley__V1__Message *chain[] = {&m[0], &m[1], &m[2]};
    Parley__V1__Upload up = PARLEY__V1__UPLOAD__INIT;
    up.filename = "notes.txt";
    up.media_type = "text/plain";
    up.text = "the word is marmalade";
    up.message_id = "3";
    Parley__V1__Upload *ups[] = {&up};
    pr_input in = {.chain = chain,
                   .n_chain = 3,
                   .uploads = ups,
                   .n_uploads = 1,
                   .new_user = NULL,
                   .window = 4096,
                   .answer = 64};
    pr_prompt p;
    CHECK_EQ_INT(pr_build(&in, &p), PL_OK);
    CHECK_EQ_INT(p.n, 3);
    CHECK_EQ_INT(p.msgs[2]->role, U);
    CHECK(strstr(p.msgs[2]->content, "read this") == p.msgs[2]->content);
    CHECK(strstr(p.msgs[2]->content, "[Attached file: notes.txt (text/plain)]") != NULL);
    CHECK(strstr(p.msgs[2]->content, "the word is marmalade") != NULL);
    pr_free(&p);
    /* A chain that ends with an answer has nothing to regenerate. */
    in.n_chain = 2;
    CHECK_EQ_INT(pr_build(&in, &p), PL_INVALID);
}

TEST(prompt_refuses_a_new_message_that_cannot_fit_with_a_clear_message)
{
    static char big[9000];
    memset(big, 'y', sizeof big - 1);
    Parley__V1__Upload up = PARLEY__V1__UPLOAD__INIT;
    up.filename = "big.txt";
    up.media_type = "text/plain";
    up.text = big;
    up.message_id = "";
    Parley__V1__Upload *ups[] = {&up};
    pr_input in = {
        .uploads = ups, .n_uploads = 1, .new_user = "summarise", .window = 2048, .answer = 512};
    pr_prompt p;
    CHECK_EQ_INT(pr_build(&in, &p), PL_INVALID);
    CHECK(strstr(pl_err_last(), "context window of 2048 tokens") != NULL);
    CHECK(strstr(pl_err_last(), "attachments") != NULL);
    CHECK(p.msgs == NULL && p.n == 0);
    in.window = 8192;
    CHECK_EQ_INT(pr_build(&in, &p), PL_OK);
    pr_free(&p);
}

TEST(prompt_title_cleaning)
{
    char t[32];
    CHECK_EQ_INT(pr_clean_title("  \"Paris Trip Plans\".\nMore text", t, sizeof t), 16);
    CHECK_STR(t, "Paris Trip Plans");
    pr_clean_title("**Title:** Learning C", t, sizeof t);
    CHECK_STR(t, "Learning C");
    CHECK_EQ_INT(pr_clean_title("\n\n  \n", t, sizeof t), 0);
    CHECK_STR(t, "");
    /* Cut at a code point boundary: "é" is two bytes. */
    char small[6];
    pr_clean_title("abcdé", small, sizeof small);
    CHECK_STR(small, "abcd");
    CHECK_EQ_INT(pr_clean_title(NULL, t, sizeof t), 0);
}
