// Iris classifier in Zig, on wit-bindgen's C bindings: the same handler as
// plugins/iris. An example is the four measurements of a flower; the inference is the
// species name (`label`) and the probability of each species (`probabilities`,
// f32 [3]). The model runs in the host (tract).
//
// The C bindings' conventions hold here too: arguments of exports belong to the callee
// (freed here), results are malloc'ed here (C's allocator: the bindings free them with
// `free`), results of imports belong to the caller. The bindings' `*_free` functions
// never drop resource handles, so every owned tensor is dropped here unless returned.

const std = @import("std");
const c = @cImport(@cInclude("handler.h"));

const max_labels = 16;
var labels: [max_labels][]u8 = undefined;
var label_count: usize = 0;
var model: ?c.runinfer_handler_inference_own_model_t = null;

const Error = c.runinfer_handler_types_error_t;

fn fail(err: *Error, code: c.runinfer_handler_types_error_code_t, message: [*:0]const u8) bool {
    err.code = code;
    c.handler_string_dup(&err.message, message);
    return false;
}

fn bytes(s: c.handler_string_t) []const u8 {
    return s.ptr[0..s.len];
}

/// A malloc'ed slice of `n` items (freed by the bindings with `free`).
fn alloc(comptime T: type, n: usize) []T {
    const ptr: [*]T = @ptrCast(@alignCast(std.c.malloc(@max(n, 1) * @sizeOf(T)) orelse @panic("out of memory")));
    return ptr[0..n];
}

fn setLabels(text: []const u8) void {
    for (labels[0..label_count]) |label| std.c.free(label.ptr);
    label_count = 0;
    var parts = std.mem.splitScalar(u8, text, ',');
    while (parts.next()) |part| {
        if (label_count == max_labels) break;
        const label = std.mem.trim(u8, part, " ");
        const copy = alloc(u8, label.len + 1);
        @memcpy(copy[0..label.len], label);
        copy[label.len] = 0;
        labels[label_count] = copy[0..label.len];
        label_count += 1;
    }
}

export fn exports_runinfer_handler_handler_api_init(
    args: *c.handler_list_tuple2_string_string_t,
    ret: *c.exports_runinfer_handler_handler_api_handler_info_t,
    err: *Error,
) bool {
    _ = err;
    setLabels("setosa,versicolor,virginica");
    for (args.ptr[0..args.len]) |arg| {
        if (std.mem.eql(u8, bytes(arg.f0), "labels")) setLabels(bytes(arg.f1));
    }
    c.handler_list_tuple2_string_string_free(args);
    ret.* = std.mem.zeroes(c.exports_runinfer_handler_handler_api_handler_info_t);
    ret.batching.min_batch_size = .{ .is_some = true, .val = 1 };
    ret.batching.max_batch_size = .{ .is_some = true, .val = 64 };
    ret.batching.max_batch_duration_ms = .{ .is_some = true, .val = 10 };
    return true;
}

/// An f32 tensor spec of one fixed dimension.
fn f32Vector(length: u64) c.runinfer_handler_types_tensor_spec_t {
    const dims = alloc(c.handler_option_u64_t, 1);
    dims[0] = .{ .is_some = true, .val = length };
    return .{
        .dtype = c.RUNINFER_HANDLER_TYPES_DTYPE_F32,
        .shape = .{ .is_some = true, .val = .{ .ptr = dims.ptr, .len = 1 } },
    };
}

export fn exports_runinfer_handler_handler_api_get_signature(
    ret: *c.exports_runinfer_handler_handler_api_signature_t,
    err: *Error,
) bool {
    _ = err;
    ret.* = std.mem.zeroes(c.exports_runinfer_handler_handler_api_signature_t);
    ret.inputs.tag = c.RUNINFER_HANDLER_TYPES_VALUE_KIND_TENSOR;
    ret.inputs.val.tensor = f32Vector(4);
    const fields = alloc(c.runinfer_handler_types_field_spec_t, 2);
    @memset(fields, std.mem.zeroes(c.runinfer_handler_types_field_spec_t));
    c.handler_string_dup(&fields[0].name, "label");
    fields[0].kind.tag = c.RUNINFER_HANDLER_TYPES_FIELD_KIND_TEXT;
    c.handler_string_dup(&fields[1].name, "probabilities");
    fields[1].kind.tag = c.RUNINFER_HANDLER_TYPES_FIELD_KIND_TENSOR;
    fields[1].kind.val.tensor = f32Vector(label_count);
    ret.outputs.tag = c.RUNINFER_HANDLER_TYPES_VALUE_KIND_FIELDS;
    ret.outputs.val.fields = .{ .ptr = fields.ptr, .len = 2 };
    return true;
}

export fn exports_runinfer_handler_handler_api_load_model(err: *Error) bool {
    if (model) |m| c.runinfer_handler_inference_model_drop_own(m);
    model = null;
    var name: c.handler_string_t = undefined;
    c.handler_string_set(&name, "iris");
    var opened: c.runinfer_handler_inference_own_model_t = undefined;
    if (!c.runinfer_handler_inference_static_model_open(&name, &opened, err)) return false;
    model = opened;
    return true;
}

export fn exports_runinfer_handler_handler_api_update_model_path(
    name: *c.handler_string_t,
    maybe_path: ?*c.handler_string_t,
    err: *Error,
) bool {
    // load_model follows and opens the model by name again.
    _ = err;
    c.handler_string_free(name);
    if (maybe_path) |path| c.handler_string_free(path);
    return true;
}

fn output(outs: *const c.runinfer_handler_inference_list_tuple2_string_own_tensor_t, name: []const u8) ?c.runinfer_handler_types_own_tensor_t {
    for (outs.ptr[0..outs.len]) |out| {
        if (std.mem.eql(u8, bytes(out.f0), name)) return out.f1;
    }
    return null;
}

fn borrow(t: c.runinfer_handler_types_own_tensor_t) c.runinfer_handler_types_borrow_tensor_t {
    return c.runinfer_handler_types_borrow_tensor(t);
}

export fn exports_runinfer_handler_handler_api_run_inference(
    batch: *c.exports_runinfer_handler_handler_api_list_value_t,
    args: *c.handler_list_tuple2_string_string_t,
    ret: *c.exports_runinfer_handler_handler_api_list_value_t,
    err: *Error,
) bool {
    c.handler_list_tuple2_string_string_free(args);
    const examples = batch.ptr[0..batch.len];
    var outs = std.mem.zeroes(c.runinfer_handler_inference_list_tuple2_string_own_tensor_t);
    var predicted = std.mem.zeroes(c.handler_list_s64_t);
    var probabilities = std.mem.zeroes(c.runinfer_handler_types_list_own_tensor_t);
    defer {
        for (examples) |example| {
            if (example.tag == c.RUNINFER_HANDLER_TYPES_VALUE_TENSOR) c.runinfer_handler_types_tensor_drop_own(example.val.tensor);
        }
        for (outs.ptr[0..outs.len]) |out| c.runinfer_handler_types_tensor_drop_own(out.f1);
        for (probabilities.ptr[0..probabilities.len]) |row| c.runinfer_handler_types_tensor_drop_own(row);
        c.runinfer_handler_inference_list_tuple2_string_own_tensor_free(&outs);
        c.handler_list_s64_free(&predicted);
        c.runinfer_handler_types_list_own_tensor_free(&probabilities);
        c.exports_runinfer_handler_handler_api_list_value_free(batch);
    }

    const m = model orelse return fail(err, c.RUNINFER_HANDLER_TYPES_ERROR_CODE_INTERNAL, "load_model was not called");
    const items = alloc(c.runinfer_handler_types_borrow_tensor_t, examples.len);
    defer std.c.free(items.ptr);
    for (examples, items) |example, *item| {
        if (example.tag != c.RUNINFER_HANDLER_TYPES_VALUE_TENSOR)
            return fail(err, c.RUNINFER_HANDLER_TYPES_ERROR_CODE_INVALID_INPUT, "iris takes tensor examples");
        item.* = borrow(example.val.tensor);
    }
    var stack_list = c.runinfer_handler_types_list_borrow_tensor_t{ .ptr = items.ptr, .len = items.len };
    var features: c.runinfer_handler_types_own_tensor_t = undefined;
    if (!c.runinfer_handler_types_static_tensor_stack(&stack_list, &features, err)) return false;
    defer c.runinfer_handler_types_tensor_drop_own(features);

    var input: c.runinfer_handler_inference_tuple2_string_borrow_tensor_t = undefined;
    c.handler_string_set(&input.f0, "input");
    input.f1 = borrow(features);
    var inputs = c.runinfer_handler_inference_list_tuple2_string_borrow_tensor_t{ .ptr = &input, .len = 1 };
    if (!c.runinfer_handler_inference_method_model_run(c.runinfer_handler_inference_borrow_model(m), &inputs, &outs, err)) return false;
    const label_out = output(&outs, "label") orelse
        return fail(err, c.RUNINFER_HANDLER_TYPES_ERROR_CODE_MODEL, "the model has no `label` output");
    const prob_out = output(&outs, "probabilities") orelse
        return fail(err, c.RUNINFER_HANDLER_TYPES_ERROR_CODE_MODEL, "the model has no `probabilities` output");
    if (!c.runinfer_handler_types_method_tensor_to_i64(borrow(label_out), &predicted, err)) return false;
    // Split in the host: the probabilities never enter guest memory.
    if (!c.runinfer_handler_types_method_tensor_unstack(borrow(prob_out), &probabilities, err)) return false;
    if (predicted.len != examples.len or probabilities.len != examples.len)
        return fail(err, c.RUNINFER_HANDLER_TYPES_ERROR_CODE_MODEL, "unexpected number of labels or probabilities");
    for (predicted.ptr[0..predicted.len]) |label| {
        if (label < 0 or label >= label_count)
            return fail(err, c.RUNINFER_HANDLER_TYPES_ERROR_CODE_MODEL, "label index out of range");
    }

    // Each row of probabilities moves into its inference.
    const values = alloc(c.exports_runinfer_handler_handler_api_value_t, examples.len);
    for (values, predicted.ptr[0..predicted.len], probabilities.ptr[0..probabilities.len]) |*value, label, row| {
        const fields = alloc(c.runinfer_handler_types_tuple2_string_field_t, 2);
        c.handler_string_dup(&fields[0].f0, "label");
        fields[0].f1.tag = c.RUNINFER_HANDLER_TYPES_FIELD_TEXT;
        c.handler_string_dup(&fields[0].f1.val.text, labels[@intCast(label)].ptr);
        c.handler_string_dup(&fields[1].f0, "probabilities");
        fields[1].f1.tag = c.RUNINFER_HANDLER_TYPES_FIELD_TENSOR;
        fields[1].f1.val.tensor = row;
        value.tag = c.RUNINFER_HANDLER_TYPES_VALUE_FIELDS;
        value.val.fields = .{ .ptr = fields.ptr, .len = 2 };
    }
    // Moved into the inferences: not dropped by the deferred cleanup.
    std.c.free(probabilities.ptr);
    probabilities = std.mem.zeroes(c.runinfer_handler_types_list_own_tensor_t);
    ret.* = .{ .ptr = values.ptr, .len = values.len };
    return true;
}
