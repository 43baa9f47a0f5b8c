/* test_device.c — choosing the compute device (services/worker/engine/device.c): device names,
 * and the clear refusal of a CUDA device by a build without CUDA or a machine without a GPU
 * (this test runs in both builds; on a machine with a GPU and a CUDA build the probe succeeds
 * and the refusal half is skipped). */
#include <string.h>

#include "../harness.h"
#include "backend_cuda.h"
#include "engine.h"

TEST(device_names_parse)
{
    int ord = 7;
    CHECK(be_parse_device(NULL, &ord) == PL_OK && ord == -1);
    CHECK(be_parse_device("", &ord) == PL_OK && ord == -1);
    CHECK(be_parse_device("cpu", &ord) == PL_OK && ord == -1);
    CHECK(be_parse_device("cuda", &ord) == PL_OK && ord == 0);
    CHECK(be_parse_device("cuda:0", &ord) == PL_OK && ord == 0);
    CHECK(be_parse_device("cuda:12", &ord) == PL_OK && ord == 12);
    static const char *bad[] = {"gpu", "cuda:", "cuda:-1", "cuda:1x", "cuda:99999", "CPU", "cuda0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(be_parse_device(bad[i], &ord) == PL_INVALID);
        CHECK(strstr(pl_err_last(), "expected cpu, cuda or cuda:N") != NULL);
    }
    char desc[64];
    CHECK(eng_device_check("cpu", desc, sizeof desc) == PL_OK);
    CHECK_STR(desc, "cpu");
    CHECK(eng_device_check("tpu", desc, sizeof desc) == PL_INVALID);
}

TEST(device_cuda_refused_clearly_without_support_or_gpu)
{
    char desc[160];
    pl_status s = eng_device_check("cuda:0", desc, sizeof desc);
    if (s == PL_OK) {
        CHECK(be_cuda_built());
        SKIP("a CUDA device is present: the refusal cannot be shown here");
    }
    CHECK(s == PL_UNSUPPORTED);
    if (be_cuda_built())
        CHECK(strstr(pl_err_last(), "no CUDA device is visible") != NULL);
    else
        CHECK(strstr(pl_err_last(), "CUDA support was not built") != NULL);
    /* creating a backend fails the same way, and leaves nothing behind */
    be_backend *b = (be_backend *)&desc;
    CHECK(be_cuda_create(0, 16, 256, 64, &b) == PL_UNSUPPORTED);
    CHECK(b == NULL);
    /* the CPU backend through the same entry point */
    CHECK(be_open("cpu", NULL, 1, 16, 256, 64, &b) == PL_OK);
    CHECK(b != NULL && be_host_memory(b));
    if (b)
        b->ops->destroy(b);
}
