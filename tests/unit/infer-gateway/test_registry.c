/* Unit tests for the infer-gateway's worker registry. */
#include "../harness.h"

#include <stdbool.h>

#include "registry.h"

static void beat(reg_registry *r, const char *id, const char *model, uint32_t free_slots,
                 uint32_t ctx, bool draining, int64_t now)
{
    Parley__V1__ModelStatus ms = PARLEY__V1__MODEL_STATUS__INIT, *pm = &ms;
    ms.name = (char *)model;
    ms.max_slots = 16;
    ms.free_slots = free_slots;
    ms.context_length = ctx;
    Parley__V1__WorkerHeartbeat hb = PARLEY__V1__WORKER_HEARTBEAT__INIT;
    hb.worker_id = (char *)id;
    hb.models = &pm;
    hb.n_models = model ? 1 : 0;
    hb.draining = draining;
    CHECK_EQ_INT(reg_heartbeat(r, &hb, now, 1700000000000LL + now), PL_OK);
}

TEST(registry_aggregates_models_across_workers)
{
    reg_registry *r = reg_create(5000);
    beat(r, "w1", "smol", 3, 8192, false, 0);
    beat(r, "w2", "smol", 5, 4096, false, 10);
    beat(r, "w3", "gemma", 1, 2048, false, 20);
    reg_model m[8];
    size_t n = reg_models(r, 100, m, 8);
    CHECK_EQ_INT(n, 2);
    CHECK_STR(m[0].name, "gemma");
    CHECK_STR(m[1].name, "smol");
    CHECK_EQ_INT(m[1].workers, 2);
    CHECK_EQ_INT(m[1].free_slots, 8);
    CHECK_EQ_INT(m[1].context_length, 4096);
    CHECK_EQ_INT(m[1].first_seen_ms, 1700000000000LL);
    CHECK_EQ_INT(reg_n_workers(r, 100), 3);
    reg_destroy(r);
}

TEST(registry_drops_silent_and_draining_workers)
{
    reg_registry *r = reg_create(1000);
    beat(r, "w1", "smol", 3, 8192, false, 0);
    beat(r, "w2", "other", 3, 8192, false, 900);
    reg_model m[8];
    CHECK_EQ_INT(reg_models(r, 1500, m, 8), 1); /* w1 silent for 1500 ms > 1000 */
    CHECK_STR(m[0].name, "other");
    beat(r, "w2", "other", 3, 8192, true, 1600); /* draining: announced, not counted */
    CHECK_EQ_INT(reg_models(r, 1600, m, 8), 0);
    CHECK_EQ_INT(reg_n_workers(r, 1600), 0);
    beat(r, "w1", "smol", 3, 8192, false, 2000); /* comes back */
    CHECK_EQ_INT(reg_models(r, 2000, m, 8), 1);
    reg_destroy(r);
}

TEST(registry_refuses_heartbeat_without_id)
{
    reg_registry *r = reg_create(1000);
    Parley__V1__WorkerHeartbeat hb = PARLEY__V1__WORKER_HEARTBEAT__INIT;
    hb.worker_id = (char *)"";
    CHECK_EQ_INT(reg_heartbeat(r, &hb, 0, 0), PL_INVALID);
    reg_model m[1];
    CHECK_EQ_INT(reg_models(r, 0, m, 1), 0);
    reg_destroy(r);
}

TEST(registry_respects_capacity)
{
    reg_registry *r = reg_create(1000);
    beat(r, "w1", "a", 1, 1, false, 0);
    beat(r, "w2", "b", 1, 1, false, 0);
    beat(r, "w3", "c", 1, 1, false, 0);
    reg_model m[2];
    CHECK_EQ_INT(reg_models(r, 0, m, 2), 2);
    reg_destroy(r);
}
