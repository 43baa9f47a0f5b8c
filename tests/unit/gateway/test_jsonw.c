/* test_jsonw.c — the gateway's streaming JSON writer (services/gateway/jsonw.c) and the
 * conversation text written with it (convs_json.c): output parsed back with cJSON. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../harness.h"
#include "convs.h"
#include "jsonw.h"

TEST(jsonw_writes_nested_containers_with_commas_in_place)
{
    jw w;
    jw_init(&w, 1); /* forces several reallocations */
    jw_obj_begin(&w);
    jw_kstr(&w, "a", "x");
    jw_kint(&w, "n", -42);
    jw_key(&w, "list");
    jw_arr_begin(&w);
    jw_int(&w, 1);
    jw_arr_begin(&w);
    jw_arr_end(&w);
    jw_obj_begin(&w);
    jw_obj_end(&w);
    jw_bool(&w, true);
    jw_null(&w);
    jw_str(&w, NULL);
    jw_arr_end(&w);
    jw_key(&w, "t");
    jw_time(&w, 1700000000999);
    jw_key(&w, "z");
    jw_time(&w, 0);
    jw_obj_end(&w);
    size_t len = 0;
    char *t = jw_finish(&w, &len);
    CHECK_STR(t, "{\"a\":\"x\",\"n\":-42,\"list\":[1,[],{},true,null,null],\"t\":1700000000,"
                 "\"z\":null}");
    CHECK_EQ_INT(len, t ? strlen(t) : 0);
    free(t);
}

TEST(jsonw_escapes_quotes_backslashes_and_control_characters)
{
    const char *in = "q\"b\\n\nr\rt\tb\bf\fc\x01\x1f end ünï €";
    jw w;
    jw_init(&w, 0);
    jw_arr_begin(&w);
    jw_str(&w, in);
    jw_arr_end(&w);
    size_t len;
    char *t = jw_finish(&w, &len);
    CHECK(t && strstr(t, "\\u0001") && strstr(t, "\\u001f") && strstr(t, "\\\"") &&
          strstr(t, "\\\\") && strstr(t, "\\n") && strstr(t, "\\b") && strstr(t, "\\f"));
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    CHECK(cJSON_IsArray(j));
    const cJSON *s = cJSON_GetArrayItem(j, 0);
    CHECK(cJSON_IsString(s) && strcmp(s->valuestring, in) == 0);
    cJSON_Delete(j);
    free(t);
}

TEST(jsonw_refuses_to_finish_with_a_container_open)
{
    jw w;
    jw_init(&w, 0);
    jw_obj_begin(&w);
    jw_kint(&w, "a", 1);
    size_t len = 7;
    CHECK(jw_finish(&w, &len) == NULL);
    CHECK_EQ_INT(len, 7);
}

TEST(convs_branch_text_is_the_documented_conversation_shape)
{
    Parley__V1__Conversation c = PARLEY__V1__CONVERSATION__INIT;
    c.id = "c1";
    c.title = "Tab\tand \"quotes\"";
    c.model = "smollm2-135m";
    c.created_ms = 1000;
    c.updated_ms = 0;
    c.active_leaf_id = "m2";
    Parley__V1__Message m1 = PARLEY__V1__MESSAGE__INIT, m2 = PARLEY__V1__MESSAGE__INIT;
    Parley__V1__Usage us = PARLEY__V1__USAGE__INIT;
    m1.id = "m1";
    m1.role = PARLEY__V1__ROLE__ROLE_USER;
    m1.content = "line1\nline2";
    m1.sibling_index = 1;
    m1.sibling_count = 2;
    char *ups[] = {"u1", "u2"};
    m1.upload_ids = ups;
    m1.n_upload_ids = 2;
    m2.id = "m2";
    m2.parent_id = "m1";
    m2.role = PARLEY__V1__ROLE__ROLE_ASSISTANT;
    m2.content = NULL;
    m2.feedback = -1;
    m2.error = "stopped";
    us.prompt_tokens = 12;
    us.completion_tokens = 34;
    m2.usage = &us;
    Parley__V1__Message *ms[] = {&m1, &m2};
    Parley__V1__HistoryReply rp = PARLEY__V1__HISTORY_REPLY__INIT;
    rp.conversation = &c;
    rp.messages = ms;
    rp.n_messages = 2;
    size_t len;
    char *t = cv_branch_text(&rp, &len);
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    CHECK(cJSON_IsObject(j));
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "title")), "Tab\tand \"quotes\"");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "object")), "conversation");
    CHECK(cJSON_GetObjectItem(j, "created_at")->valuedouble == 1);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "updated_at")));
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "active_leaf_id")), "m2");
    const cJSON *arr = cJSON_GetObjectItem(j, "messages");
    CHECK_EQ_INT(cJSON_GetArraySize(arr), 2);
    const cJSON *a = cJSON_GetArrayItem(arr, 0), *b = cJSON_GetArrayItem(arr, 1);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(a, "parent_id")));
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "role")), "user");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(a, "content")), "line1\nline2");
    CHECK_EQ_INT(cJSON_GetObjectItem(a, "sibling_count")->valueint, 2);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(a, "upload_ids")), 2);
    CHECK(cJSON_GetObjectItem(a, "usage") == NULL);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(b, "parent_id")), "m1");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(b, "content")), "");
    CHECK_EQ_INT(cJSON_GetObjectItem(b, "feedback")->valueint, -1);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(b, "error")), "stopped");
    const cJSON *u = cJSON_GetObjectItem(b, "usage");
    CHECK(u && cJSON_GetObjectItem(u, "completion_tokens")->valueint == 34);
    cJSON_Delete(j);
    free(t);
}
