/* score_features_c: the C ABI (structcore/structcore.h) from plain C.
 *
 *   score_features_c MODEL.npz FEATURES.f32
 *
 * FEATURES.f32: raw little-endian float32 values, B * h * w * dim of them, C order (image, row,
 * column, channel); B is inferred from the file size (numpy: features.astype('<f4').tofile()).
 * Prints one line per image: "<index> <score_max> <score_struct> <score> <is_anomalous>".
 * Exit status: 0 success, 1 usage, 2 a structcore error (code and message on stderr),
 * 3 another error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "structcore/structcore.h"

static int report(int status, const char* what) {
  fprintf(stderr, "error %d in %s: %s\n", status, what, structcore_last_error());
  return 2;
}

int main(int argc, char** argv) {
  structcore_scorer* scorer = NULL;
  int64_t gh = 0, gw = 0, dim = 0, height = 0, width = 0, n_comp = 0, resize = 0;
  int64_t b, i, per_image;
  double threshold = 0.0;
  long size;
  float* features;
  double *smax, *sstruct, *score;
  uint8_t* anomalous;
  FILE* f;
  int status;

  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL.npz FEATURES.f32\n", argv[0]);
    return 1;
  }
  if (structcore_abi_version() != STRUCTCORE_ABI_VERSION) {
    fprintf(stderr, "structcore ABI %d, header %d\n", structcore_abi_version(),
            STRUCTCORE_ABI_VERSION);
    return 3;
  }
  status = structcore_scorer_create(argv[1], &scorer);
  if (status != STRUCTCORE_OK) return report(status, "structcore_scorer_create");
  structcore_scorer_input_shape(scorer, &gh, &gw, &dim);
  structcore_scorer_output_shape(scorer, &height, &width, &n_comp, &resize);
  structcore_scorer_thresholds(scorer, &threshold, NULL, NULL);
  printf("# structcore %s: grid %lldx%lld, dim %lld, maps %lldx%lld, threshold %.17g\n",
         structcore_version(), (long long)gh, (long long)gw, (long long)dim, (long long)height,
         (long long)width, threshold);

  f = fopen(argv[2], "rb");
  if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0) {
    fprintf(stderr, "cannot read %s\n", argv[2]);
    structcore_scorer_destroy(scorer);
    return 3;
  }
  rewind(f);
  per_image = gh * gw * dim;
  b = (int64_t)(size / (long)sizeof(float)) / per_image;
  if (b * per_image * (int64_t)sizeof(float) != (int64_t)size) {
    fprintf(stderr, "%s holds %ld bytes, not a multiple of one image's %lld floats\n", argv[2],
            size, (long long)per_image);
    fclose(f);
    structcore_scorer_destroy(scorer);
    return 3;
  }
  features = (float*)malloc((size_t)size + 1);
  smax = (double*)malloc(sizeof(double) * (size_t)(b + 1));
  sstruct = (double*)malloc(sizeof(double) * (size_t)(b + 1));
  score = (double*)malloc(sizeof(double) * (size_t)(b + 1));
  anomalous = (uint8_t*)malloc((size_t)(b + 1));
  if (!features || !smax || !sstruct || !score || !anomalous ||
      fread(features, 1, (size_t)size, f) != (size_t)size) {
    fprintf(stderr, "out of memory or read error\n");
    fclose(f);
    structcore_scorer_destroy(scorer);
    return 3;
  }
  fclose(f);

  /* maps, descriptor and z are not needed here: pass NULL. */
  status = structcore_scorer_score(scorer, features, b, gh, gw, dim, 0, NULL, smax, sstruct,
                                   score, NULL, NULL, anomalous);
  if (status != STRUCTCORE_OK) {
    report(status, "structcore_scorer_score");
  } else {
    for (i = 0; i < b; ++i)
      printf("%lld %.17g %.17g %.17g %d\n", (long long)i, smax[i], sstruct[i], score[i],
             (int)anomalous[i]);
  }
  free(features);
  free(smax);
  free(sstruct);
  free(score);
  free(anomalous);
  structcore_scorer_destroy(scorer);
  return status == STRUCTCORE_OK ? 0 : 2;
}
