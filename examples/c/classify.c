/* Classify one 28x28 image with the CNN that kiln compiled into libcnn.a.
 *
 *   kiln compile tests/models/cnn.onnx --out-dir build
 *   cc -std=c99 -O2 -I build examples/c/classify.c build/libcnn.a -o classify
 *   ./classify tests/data/cnn/input_0.bin probs.bin
 *
 * The input file holds 784 little-endian floats; without arguments a synthetic image is used.
 * The library needs nothing else: no libc, no allocator, no runtime. This program allocates the
 * arena and the tensors itself (statically, here).
 */
#include <stdio.h>
#include "cnn.h"

static float image[cnn_image_SIZE];
static float probs[cnn_probs_SIZE];
/* The arena: scratch memory of a size known at compile time. */
static _Alignas(cnn_ARENA_ALIGN) unsigned char arena[cnn_ARENA_SIZE];

int main(int argc, char **argv) {
    if (argc > 1) {
        FILE *f = fopen(argv[1], "rb");
        if (!f || fread(image, sizeof image, 1, f) != 1) {
            fprintf(stderr, "cannot read %d floats from %s\n", cnn_image_SIZE, argv[1]);
            return 1;
        }
        fclose(f);
    } else {
        for (int i = 0; i < cnn_image_SIZE; i++) image[i] = (float)((i * 37) % 255) / 255.0f;
    }

    cnn_inputs in = { image };
    cnn_outputs out = { probs };
    int rc = cnn_run(&in, &out, arena);
    if (rc != cnn_OK) {
        fprintf(stderr, "cnn_run failed with code %d\n", rc);
        return 1;
    }

    int best = 0;
    for (int i = 0; i < cnn_probs_SIZE; i++) {
        printf("class %d: %.6f\n", i, probs[i]);
        if (probs[i] > probs[best]) best = i;
    }
    printf("predicted class: %d\n", best);

    if (argc > 2) {
        FILE *f = fopen(argv[2], "wb");
        if (!f || fwrite(probs, sizeof probs, 1, f) != 1) return 1;
        fclose(f);
    }
    return 0;
}
