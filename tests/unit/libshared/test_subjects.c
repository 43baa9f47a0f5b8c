/* test_subjects.c — subj_token: NATS-safe tokens and its size rules. */
#include "../harness.h"

#include "subjects.h"

TEST(subjects_token_replaces_unsafe_characters)
{
    char out[64];
    size_t n = subj_token(out, sizeof out, SUBJ_JOBS_PREFIX, "llama-3.2:1b q4*>");
    CHECK_STR(out, "parley.v1.jobs.llama-3_2_1b_q4__");
    CHECK_EQ_INT(n, strlen("parley.v1.jobs.llama-3_2_1b_q4__"));
    n = subj_token(out, sizeof out, CONSUMER_JOBS_PREFIX, "Qwen2_5-0_5B");
    CHECK_STR(out, "workers-Qwen2_5-0_5B");
    CHECK_EQ_INT(n, 20);
    /* Every byte of a multi-byte character becomes '_'. */
    n = subj_token(out, sizeof out, "", "m\xC3\xA9");
    CHECK_STR(out, "m__");
    CHECK_EQ_INT(n, 3);
    n = subj_token(out, sizeof out, NULL, "a.b");
    CHECK_STR(out, "a_b");
    CHECK_EQ_INT(n, 3);
}

TEST(subjects_token_rejects_empty_names_and_small_buffers)
{
    char out[16] = "junk";
    CHECK_EQ_INT(subj_token(out, sizeof out, "p.", ""), 0);
    CHECK_STR(out, "");
    CHECK_EQ_INT(subj_token(out, sizeof out, "p.", NULL), 0);
    /* "p.abcd" is 6 bytes: needs 7 with the NUL. */
    CHECK_EQ_INT(subj_token(out, 7, "p.", "abcd"), 6);
    CHECK_STR(out, "p.abcd");
    strcpy(out, "junk");
    CHECK_EQ_INT(subj_token(out, 6, "p.", "abcd"), 0);
    CHECK_STR(out, "");
    CHECK_EQ_INT(subj_token(out, 0, "p.", "abcd"), 0);
    CHECK_EQ_INT(subj_token(NULL, 10, "p.", "abcd"), 0);
}
