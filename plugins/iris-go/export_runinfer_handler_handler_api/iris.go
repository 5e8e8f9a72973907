// Package export_runinfer_handler_handler_api is the iris classifier in Go (wit-bindgen's
// Go bindings), the same handler as plugins/iris: an example is the four measurements
// of a flower; the inference is the species name (`label`) and the probability of each
// species (`probabilities`, f32 [3]). The model runs in the host (tract).
//
// Resources are not garbage collected: every tensor handle this handler owns is
// dropped here (Drop) unless it is returned, or the host keeps counting it against
// the instance's tensor limit.
package export_runinfer_handler_handler_api

import (
	"fmt"
	"strings"

	handlerApi "wit_component/runinfer_handler_handler_api"
	"wit_component/runinfer_handler_inference"
	types "wit_component/runinfer_handler_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

type result[T any] = witTypes.Result[T, types.Error]

var (
	labels = []string{"setosa", "versicolor", "virginica"}
	model  *runinfer_handler_inference.Model
)

func fail[T any](code types.ErrorCode, message string) result[T] {
	return witTypes.Err[T](types.Error{Code: code, Message: message})
}

func Init(args []witTypes.Tuple2[string, string]) result[handlerApi.HandlerInfo] {
	for _, arg := range args {
		if arg.F0 == "labels" {
			labels = nil
			for _, label := range strings.Split(arg.F1, ",") {
				labels = append(labels, strings.TrimSpace(label))
			}
		}
	}
	return witTypes.Ok[handlerApi.HandlerInfo, types.Error](handlerApi.HandlerInfo{
		MetricsNamespace: witTypes.None[string](),
		Batching: handlerApi.Batching{
			MinBatchSize:       witTypes.Some[uint32](1),
			MaxBatchSize:       witTypes.Some[uint32](64),
			MaxBatchDurationMs: witTypes.Some[uint32](10),
		},
		ResourceHints: handlerApi.ResourceHints{
			MinRamMb:    witTypes.None[uint64](),
			Accelerator: witTypes.None[string](),
		},
	})
}

// An f32 tensor spec of one fixed dimension.
func f32Vector(length int) types.TensorSpec {
	dims := []witTypes.Option[uint64]{witTypes.Some(uint64(length))}
	return types.TensorSpec{Dtype: types.Dtype_F32, Shape: witTypes.Some(dims)}
}

func GetSignature() result[types.Signature] {
	return witTypes.Ok[types.Signature, types.Error](types.Signature{
		Inputs: types.MakeValueKindTensor(f32Vector(4)),
		Outputs: types.MakeValueKindFields([]types.FieldSpec{
			{Name: "label", Kind: types.MakeFieldKindText()},
			{Name: "probabilities", Kind: types.MakeFieldKindTensor(f32Vector(len(labels)))},
		}),
	})
}

func LoadModel() result[witTypes.Unit] {
	if model != nil {
		model.Drop()
		model = nil
	}
	opened := runinfer_handler_inference.ModelOpen("iris")
	if opened.IsErr() {
		return witTypes.Err[witTypes.Unit](opened.Err())
	}
	model = opened.Ok()
	return witTypes.Ok[witTypes.Unit, types.Error](witTypes.Unit{})
}

func UpdateModelPath(name string, path witTypes.Option[string]) result[witTypes.Unit] {
	// LoadModel follows and opens the model by name again.
	return witTypes.Ok[witTypes.Unit, types.Error](witTypes.Unit{})
}

func RunInference(batch []types.Value, args []witTypes.Tuple2[string, string]) result[[]types.Value] {
	examples := make([]*types.Tensor, 0, len(batch))
	defer func() {
		for _, t := range examples {
			t.Drop()
		}
	}()
	for _, example := range batch {
		if example.Tag() != types.Value_Tensor {
			return fail[[]types.Value](types.ErrorCode_InvalidInput, "iris takes tensor examples")
		}
		examples = append(examples, example.Tensor())
	}
	if model == nil {
		return fail[[]types.Value](types.ErrorCode_Internal, "load_model was not called")
	}
	stacked := types.TensorStack(examples)
	if stacked.IsErr() {
		return witTypes.Err[[]types.Value](stacked.Err())
	}
	features := stacked.Ok()
	defer features.Drop()
	ran := model.Run([]witTypes.Tuple2[string, *types.Tensor]{{F0: "input", F1: features}})
	if ran.IsErr() {
		return witTypes.Err[[]types.Value](ran.Err())
	}
	outputs := map[string]*types.Tensor{}
	for _, out := range ran.Ok() {
		outputs[out.F0] = out.F1
	}
	defer func() {
		for _, t := range outputs {
			t.Drop()
		}
	}()
	labelOut, probOut := outputs["label"], outputs["probabilities"]
	if labelOut == nil || probOut == nil {
		return fail[[]types.Value](types.ErrorCode_Model, "the model has no `label` or `probabilities` output")
	}
	predicted := labelOut.ToI64()
	if predicted.IsErr() {
		return witTypes.Err[[]types.Value](predicted.Err())
	}
	// Split in the host: the probabilities never enter guest memory.
	rows := probOut.Unstack()
	if rows.IsErr() {
		return witTypes.Err[[]types.Value](rows.Err())
	}
	probabilities := rows.Ok()
	if len(predicted.Ok()) != len(batch) || len(probabilities) != len(batch) {
		for _, row := range probabilities {
			row.Drop()
		}
		return fail[[]types.Value](types.ErrorCode_Model, fmt.Sprintf(
			"expected %d labels and %d rows of probabilities", len(batch), len(batch)))
	}
	for _, label := range predicted.Ok() {
		if label < 0 || int(label) >= len(labels) {
			for _, row := range probabilities {
				row.Drop()
			}
			return fail[[]types.Value](types.ErrorCode_Model, fmt.Sprintf("label index %d out of range", label))
		}
	}
	inferences := make([]types.Value, len(batch))
	for i, label := range predicted.Ok() {
		// The row's handle moves into the inference.
		inferences[i] = types.MakeValueFields([]witTypes.Tuple2[string, types.Field]{
			{F0: "label", F1: types.MakeFieldText(labels[label])},
			{F0: "probabilities", F1: types.MakeFieldTensor(probabilities[i])},
		})
	}
	return witTypes.Ok[[]types.Value, types.Error](inferences)
}
