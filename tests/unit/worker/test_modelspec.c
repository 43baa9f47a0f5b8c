/* Unit tests for the worker's --models parser. */
#include "../harness.h"

#include "modelspec.h"

TEST(modelspec_parses_entries)
{
    ms_model m[MS_MAX_MODELS];
    size_t n = 99;
    CHECK_EQ_INT(ms_parse("smol=/m/a.gguf,gemma-3=/m/b c.gguf", m, &n), PL_OK);
    CHECK_EQ_INT(n, 2);
    CHECK_STR(m[0].name, "smol");
    CHECK_STR(m[0].path, "/m/a.gguf");
    CHECK_STR(m[1].name, "gemma-3");
    CHECK_STR(m[1].path, "/m/b c.gguf");
    CHECK_EQ_INT(ms_parse("", m, &n), PL_OK);
    CHECK_EQ_INT(n, 0);
}

TEST(modelspec_rejects_bad_entries)
{
    ms_model m[MS_MAX_MODELS];
    size_t n;
    CHECK_EQ_INT(ms_parse("noequals", m, &n), PL_INVALID);
    CHECK(strstr(pl_err_last(), "noequals") != NULL);
    CHECK_EQ_INT(ms_parse("=/path", m, &n), PL_INVALID);
    CHECK_EQ_INT(ms_parse("bad name=/path", m, &n), PL_INVALID);
    CHECK_EQ_INT(ms_parse("a=", m, &n), PL_INVALID);
    CHECK_EQ_INT(ms_parse("a=/x,a=/y", m, &n), PL_INVALID);
    CHECK(strstr(pl_err_last(), "twice") != NULL);
    CHECK_EQ_INT(ms_parse("a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9", m, &n), PL_INVALID);
}
