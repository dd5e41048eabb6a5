/* Classify one 28x28 image with libcnn.a on several threads, and check that the result is
 * bitwise identical to the single-threaded one.
 *
 *   kiln compile tests/models/cnn.onnx --out-dir build
 *   cc -std=c11 -O2 -pthread -I build -I examples/c examples/c/classify_parallel.c build/libcnn.a \
 *      -o classify_parallel
 *   ./classify_parallel 4
 *
 * The library never creates threads: cnn_run_parallel hands each heavy kernel to the
 * parallel_for of a kiln_parallel. Here that is the small pthread pool of kiln_pool.h; a program
 * with a thread pool of its own (OpenMP, a job system, ...) passes its own parallel_for instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cnn.h"
#include "kiln_pool.h"

static float image[cnn_image_SIZE];
static float serial[cnn_probs_SIZE], parallel[cnn_probs_SIZE];
static _Alignas(cnn_ARENA_ALIGN) unsigned char arena[cnn_ARENA_SIZE];

int main(int argc, char **argv) {
    unsigned threads = argc > 1 ? (unsigned)atoi(argv[1]) : 2;
    for (int i = 0; i < cnn_image_SIZE; i++) image[i] = (float)((i * 37) % 255) / 255.0f;
    cnn_inputs in = { image };

    cnn_outputs out1 = { serial };
    if (cnn_run(&in, &out1, arena) != cnn_OK) return 1;

    kiln_pool *pool = kiln_pool_new(threads);
    if (!pool) return 1;
    kiln_parallel par = kiln_pool_parallel(pool); /* tasks = the pool's thread count */
    cnn_outputs out2 = { parallel };
    int rc = cnn_run_parallel(&in, &out2, arena, &par);
    kiln_pool_free(pool);
    if (rc != cnn_OK) {
        fprintf(stderr, "cnn_run_parallel failed with code %d\n", rc);
        return 1;
    }

    int best = 0;
    for (int i = 0; i < cnn_probs_SIZE; i++)
        if (parallel[i] > parallel[best]) best = i;
    printf("threads: %u\n", par.tasks);
    printf("predicted class: %d\n", best);
    printf("identical to cnn_run: %s\n", memcmp(serial, parallel, sizeof serial) ? "no" : "yes");
    return 0;
}
