// Iris classifier in C (wit-bindgen's C bindings), the same handler as plugins/iris:
// an example is the four measurements of a flower; the inference is the species name
// (`label`) and the probability of each species (`probabilities`, f32 [3]). The model
// runs in the host (tract).
//
// Ownership follows wit-bindgen's C conventions: arguments of exports belong to the
// callee (freed here), results are malloc'ed here and freed by the bindings after the
// call, results of imports belong to the caller. The bindings' `_free` functions free
// memory but never drop resource handles: every owned tensor is dropped here, or the
// host keeps counting it against the instance's tensor limit.

#include "handler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 16

static char *labels[MAX_LABELS];
static size_t label_count;
static bool has_model;
static runinfer_handler_inference_own_model_t model;

static bool fail(runinfer_handler_types_error_t *err, runinfer_handler_types_error_code_t code,
                 const char *message) {
  err->code = code;
  handler_string_dup(&err->message, message);
  return false;
}

static void set_labels(const uint8_t *text, size_t len) {
  for (size_t i = 0; i < label_count; i++) free(labels[i]);
  label_count = 0;
  size_t start = 0;
  for (size_t i = 0; i <= len && label_count < MAX_LABELS; i++) {
    if (i == len || text[i] == ',') {
      size_t a = start, b = i;
      while (a < b && text[a] == ' ') a++;
      while (b > a && text[b - 1] == ' ') b--;
      char *label = malloc(b - a + 1);
      memcpy(label, text + a, b - a);
      label[b - a] = 0;
      labels[label_count++] = label;
      start = i + 1;
    }
  }
}

bool exports_runinfer_handler_handler_api_init(handler_list_tuple2_string_string_t *args,
                                               exports_runinfer_handler_handler_api_handler_info_t *ret,
                                               exports_runinfer_handler_handler_api_error_t *err) {
  const char *defaults = "setosa,versicolor,virginica";
  set_labels((const uint8_t *)defaults, strlen(defaults));
  for (size_t i = 0; i < args->len; i++) {
    handler_string_t *key = &args->ptr[i].f0, *value = &args->ptr[i].f1;
    if (key->len == 6 && memcmp(key->ptr, "labels", 6) == 0) set_labels(value->ptr, value->len);
  }
  handler_list_tuple2_string_string_free(args);

  memset(ret, 0, sizeof *ret);
  ret->batching.min_batch_size = (handler_option_u32_t){true, 1};
  ret->batching.max_batch_size = (handler_option_u32_t){true, 64};
  ret->batching.max_batch_duration_ms = (handler_option_u32_t){true, 10};
  (void)err;
  return true;
}

// An f32 tensor spec of one fixed dimension.
static runinfer_handler_types_tensor_spec_t f32_vector(uint64_t length) {
  handler_option_u64_t *dims = malloc(sizeof *dims);
  dims[0] = (handler_option_u64_t){true, length};
  runinfer_handler_types_tensor_spec_t spec = {RUNINFER_HANDLER_TYPES_DTYPE_F32, {true, {dims, 1}}};
  return spec;
}

bool exports_runinfer_handler_handler_api_get_signature(exports_runinfer_handler_handler_api_signature_t *ret,
                                                        exports_runinfer_handler_handler_api_error_t *err) {
  memset(ret, 0, sizeof *ret);
  ret->inputs.tag = RUNINFER_HANDLER_TYPES_VALUE_KIND_TENSOR;
  ret->inputs.val.tensor = f32_vector(4);
  runinfer_handler_types_field_spec_t *fields = calloc(2, sizeof *fields);
  handler_string_dup(&fields[0].name, "label");
  fields[0].kind.tag = RUNINFER_HANDLER_TYPES_FIELD_KIND_TEXT;
  handler_string_dup(&fields[1].name, "probabilities");
  fields[1].kind.tag = RUNINFER_HANDLER_TYPES_FIELD_KIND_TENSOR;
  fields[1].kind.val.tensor = f32_vector(label_count);
  ret->outputs.tag = RUNINFER_HANDLER_TYPES_VALUE_KIND_FIELDS;
  ret->outputs.val.fields = (runinfer_handler_types_list_field_spec_t){fields, 2};
  (void)err;
  return true;
}

bool exports_runinfer_handler_handler_api_load_model(exports_runinfer_handler_handler_api_error_t *err) {
  if (has_model) runinfer_handler_inference_model_drop_own(model);
  has_model = false;
  handler_string_t name;
  handler_string_set(&name, "iris");
  if (!runinfer_handler_inference_static_model_open(&name, &model, err)) return false;
  has_model = true;
  return true;
}

bool exports_runinfer_handler_handler_api_update_model_path(handler_string_t *model_name, handler_string_t *maybe_path,
                                                            exports_runinfer_handler_handler_api_error_t *err) {
  // load_model follows and opens the model by name again.
  handler_string_free(model_name);
  if (maybe_path) handler_string_free(maybe_path);
  (void)err;
  return true;
}

// Finds an output by name in a model's results.
static runinfer_handler_types_own_tensor_t *output(runinfer_handler_inference_list_tuple2_string_own_tensor_t *outs,
                                                   const char *name) {
  for (size_t i = 0; i < outs->len; i++) {
    handler_string_t *n = &outs->ptr[i].f0;
    if (n->len == strlen(name) && memcmp(n->ptr, name, n->len) == 0) return &outs->ptr[i].f1;
  }
  return NULL;
}

bool exports_runinfer_handler_handler_api_run_inference(exports_runinfer_handler_handler_api_list_value_t *batch,
                                                        handler_list_tuple2_string_string_t *args,
                                                        exports_runinfer_handler_handler_api_list_value_t *ret,
                                                        exports_runinfer_handler_handler_api_error_t *err) {
  handler_list_tuple2_string_string_free(args);
  bool ok = false;
  size_t rows = batch->len;
  runinfer_handler_types_list_borrow_tensor_t items = {malloc(rows * sizeof(*items.ptr)), rows};
  runinfer_handler_types_own_tensor_t features = {-1};
  runinfer_handler_inference_list_tuple2_string_own_tensor_t outs = {NULL, 0};
  handler_list_s64_t predicted = {NULL, 0};
  runinfer_handler_types_list_own_tensor_t probabilities = {NULL, 0};

  if (!has_model) {
    fail(err, RUNINFER_HANDLER_TYPES_ERROR_CODE_INTERNAL, "load_model was not called");
    goto done;
  }
  for (size_t i = 0; i < rows; i++) {
    if (batch->ptr[i].tag != RUNINFER_HANDLER_TYPES_VALUE_TENSOR) {
      fail(err, RUNINFER_HANDLER_TYPES_ERROR_CODE_INVALID_INPUT, "iris takes tensor examples");
      goto done;
    }
    items.ptr[i] = runinfer_handler_types_borrow_tensor(batch->ptr[i].val.tensor);
  }
  if (!runinfer_handler_types_static_tensor_stack(&items, &features, err)) goto done;

  runinfer_handler_inference_tuple2_string_borrow_tensor_t input;
  handler_string_set(&input.f0, "input");
  input.f1 = runinfer_handler_types_borrow_tensor(features);
  runinfer_handler_inference_list_tuple2_string_borrow_tensor_t inputs = {&input, 1};
  if (!runinfer_handler_inference_method_model_run(runinfer_handler_inference_borrow_model(model), &inputs, &outs, err))
    goto done;
  runinfer_handler_types_own_tensor_t *label_out = output(&outs, "label");
  runinfer_handler_types_own_tensor_t *prob_out = output(&outs, "probabilities");
  if (!label_out || !prob_out) {
    fail(err, RUNINFER_HANDLER_TYPES_ERROR_CODE_MODEL, "the model has no `label` or `probabilities` output");
    goto done;
  }
  if (!runinfer_handler_types_method_tensor_to_i64(runinfer_handler_types_borrow_tensor(*label_out), &predicted, err) ||
      // Split in the host: the probabilities never enter guest memory.
      !runinfer_handler_types_method_tensor_unstack(runinfer_handler_types_borrow_tensor(*prob_out), &probabilities,
                                                    err))
    goto done;
  if (predicted.len != rows || probabilities.len != rows) {
    fail(err, RUNINFER_HANDLER_TYPES_ERROR_CODE_MODEL, "unexpected number of labels or probabilities");
    goto done;
  }
  for (size_t row = 0; row < rows; row++) {
    if (predicted.ptr[row] < 0 || (size_t)predicted.ptr[row] >= label_count) {
      fail(err, RUNINFER_HANDLER_TYPES_ERROR_CODE_MODEL, "label index out of range");
      goto done;
    }
  }

  // Each row of probabilities moves into its inference.
  ret->ptr = malloc(rows * sizeof(*ret->ptr));
  ret->len = rows;
  for (size_t row = 0; row < rows; row++) {
    runinfer_handler_types_tuple2_string_field_t *fields = malloc(2 * sizeof *fields);
    handler_string_dup(&fields[0].f0, "label");
    fields[0].f1.tag = RUNINFER_HANDLER_TYPES_FIELD_TEXT;
    handler_string_dup(&fields[0].f1.val.text, labels[predicted.ptr[row]]);
    handler_string_dup(&fields[1].f0, "probabilities");
    fields[1].f1.tag = RUNINFER_HANDLER_TYPES_FIELD_TENSOR;
    fields[1].f1.val.tensor = probabilities.ptr[row];
    ret->ptr[row].tag = RUNINFER_HANDLER_TYPES_VALUE_FIELDS;
    ret->ptr[row].val.fields = (runinfer_handler_types_list_tuple2_string_field_t){fields, 2};
  }
  free(probabilities.ptr);
  probabilities = (runinfer_handler_types_list_own_tensor_t){NULL, 0};
  ok = true;

done:
  for (size_t i = 0; i < rows; i++)
    if (batch->ptr[i].tag == RUNINFER_HANDLER_TYPES_VALUE_TENSOR)
      runinfer_handler_types_tensor_drop_own(batch->ptr[i].val.tensor);
  for (size_t i = 0; i < outs.len; i++) runinfer_handler_types_tensor_drop_own(outs.ptr[i].f1);
  for (size_t i = 0; i < probabilities.len; i++) runinfer_handler_types_tensor_drop_own(probabilities.ptr[i]);
  free(items.ptr);
  if (features.__handle != -1) runinfer_handler_types_tensor_drop_own(features);
  runinfer_handler_inference_list_tuple2_string_own_tensor_free(&outs);
  handler_list_s64_free(&predicted);
  runinfer_handler_types_list_own_tensor_free(&probabilities);
  exports_runinfer_handler_handler_api_list_value_free(batch);
  return ok;
}
