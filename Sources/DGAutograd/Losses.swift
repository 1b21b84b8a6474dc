import DGTensor

/// Softmax cross-entropy of per-pixel class scores `logits` [N, C, H, W] against `targets`
/// (N H W class ids, row-major), averaged over the pixels whose target is not `ignoreIndex`
/// (ids outside 0..<C are ignored too). A batch with no counted pixel gives loss 0 and zero
/// gradients rather than NaN. Class `weights` weigh each pixel by its target class (PyTorch's
/// `weight=`): the loss is then sum w(t) nll / sum w(t).
public func crossEntropy(_ logits: Var, targets: [UInt8], ignoreIndex: UInt8 = 255, weights: [Float]? = nil) -> Var {
    let v = logits.value
    let r = Profiler.measure("crossEntropy") { Kernels.crossEntropy(v, targets: targets, ignoreIndex: ignoreIndex, weights: weights) }
    return record("crossEntropy", Tensor(shape: [], floats: [r.loss]), timed: false, [logits]) { g, _ in
        [Kernels.crossEntropyBackward(g.floats[0], logits: v, targets: targets, ignoreIndex: ignoreIndex,
                                      weights: weights, logSumExp: r.logSumExp, weight: r.weight)]
    }
}
