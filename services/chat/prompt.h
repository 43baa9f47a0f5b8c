/* prompt.h — the messages sent to the model for a turn, cut to fit the tier's context window.
 *
 * Input: the user's custom instructions (the system message), the conversation's chain root
 * → leaf (for a regeneration it ends with the user message being answered), the uploads
 * attached to those messages and to the new one, the new user message (NULL for a
 * regeneration), the window and the tokens reserved for the answer.
 *
 * Rule: the system message and the newest user message (with its attachments) are always
 * kept; then earlier messages are added newest first while they fit; the first one that does
 * not fit ends the walk (the context stays contiguous). When even the required part does not
 * fit, pr_build answers PL_INVALID with a message saying how much was needed and how much
 * the window leaves.
 *
 * Token estimate (no tokenizer outside the worker): bytes / 3, rounded up, plus 4 per
 * message for the chat template's framing. BPE vocabularies of the served models average
 * about 4 bytes a token on English text, so the estimate errs on the safe side; the worker
 * still refuses a prompt that does not fit the model's own context.
 *
 * Only answers that are complete or stopped (a partial answer is context too) enter the
 * prompt; failed and pending answers are skipped. Pure functions; no I/O, no globals. */
#ifndef PARLEY_CHAT_PROMPT_H
#define PARLEY_CHAT_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "parley.pb-c.h"
#include "status.h"

typedef struct pr_input {
    const char *system; /* custom instructions; NULL or "" = none */
    Parley__V1__Message *const *chain;
    size_t n_chain;
    Parley__V1__Upload *const *uploads; /* message_id "" = attached to the new message */
    size_t n_uploads;
    const char *new_user; /* NULL for a regeneration */
    uint32_t window;      /* context window in tokens */
    uint32_t answer;      /* tokens reserved for the answer */
} pr_input;

typedef struct pr_prompt {
    Parley__V1__ChatMessage **msgs; /* n pointers into items */
    Parley__V1__ChatMessage *items;
    char **texts; /* owned contents (n) */
    size_t n;
    uint32_t tokens; /* estimated prompt tokens */
    size_t dropped;  /* chain messages left out for lack of room */
} pr_prompt;

/* The estimated tokens of `len` bytes of text as one message. */
uint32_t pr_estimate(size_t len);

/* Builds the prompt into *out (owned by the caller: pr_free). PL_INVALID when the required
 * part does not fit (message recorded), PL_NOMEM. */
pl_status pr_build(const pr_input *in, pr_prompt *out);
void pr_free(pr_prompt *p); /* accepts a zeroed or freed prompt */

/* A conversation title from a model's answer: its first line, without a "Title:" prefix,
 * quotes, Markdown marks or a final period, at most `cap` - 1 bytes (cut at a UTF-8
 * boundary). Returns the length written to out ("" when nothing usable is left). */
size_t pr_clean_title(const char *text, char *out, size_t cap);

#endif
