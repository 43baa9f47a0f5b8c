/* tmpl.h — chat templates: a conversation becomes the exact prompt text a model was trained on.
 *
 * The family is detected from tokenizer.chat_template in the GGUF file by looking for its
 * distinctive markers (ChatML: "<|im_start|>"; Llama 3: "<|start_header_id|>"; Gemma:
 * "<start_of_turn>"), or forced by name with an override. A template that matches no family is
 * PL_UNSUPPORTED with a message naming the override option (--chat-template). */
#ifndef PARLEY_TMPL_H
#define PARLEY_TMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "gguf.h"
#include "status.h"

typedef enum tmpl_kind { TMPL_CHATML = 1, TMPL_LLAMA3, TMPL_GEMMA } tmpl_kind;

typedef enum tmpl_role { TMPL_SYSTEM = 1, TMPL_USER, TMPL_ASSISTANT } tmpl_role;

typedef struct tmpl_msg {
    tmpl_role role;
    const char *content; /* UTF-8, NUL-terminated */
} tmpl_msg;

/* Detects the family from the file, or from `override` ("chatml", "llama3", "gemma") when not
 * NULL/empty. For ChatML, *default_system is set to the model's built-in default system message
 * if the template inserts one when none is given (SmolLM2 does), else NULL (static string). */
pl_status tmpl_detect(const gguf_file *f, const char *override, tmpl_kind *kind,
                      const char **default_system);
/* Parses a family name; PL_INVALID for unknown names. */
pl_status tmpl_parse_kind(const char *name, tmpl_kind *kind);

/* Renders messages plus the assistant-turn opener (add_generation_prompt) into a malloc'd
 * NUL-terminated string the caller frees. `default_system` (may be NULL) is inserted first when
 * the first message is not a system message (as SmolLM2's template does). Llama 3 and Gemma
 * renderings start with the BOS text ("<|begin_of_text|>", "<bos>") as their templates do:
 * encode them with parse_special and without adding BOS again. NULL on out of memory. */
char *tmpl_render(tmpl_kind kind, const tmpl_msg *msgs, size_t n, const char *default_system,
                  bool add_generation_prompt);

#endif
