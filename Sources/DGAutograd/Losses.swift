import DGTensor

/// Softmax cross-entropy of per-pixel class scores `logits` [N, C, H, W] against `targets`
/// (N H W class ids, row-major), averaged over the pixels whose target is not `ignoreIndex`
/// (ids outside 0..<C are ignored too). A batch with no counted pixel gives loss 0 and zero
/// gradients rather than NaN.
public func crossEntropy(_ logits: Var, targets: [UInt8], ignoreIndex: UInt8 = 255) -> Var {
    let v = logits.value
    let r = Profiler.measure("crossEntropy") { Kernels.crossEntropy(v, targets: targets, ignoreIndex: ignoreIndex) }
    return record("crossEntropy", Tensor(shape: [], floats: [r.loss]), timed: false, [logits]) { g, _ in
        [Kernels.crossEntropyBackward(g.floats[0], logits: v, targets: targets, ignoreIndex: ignoreIndex,
                                      logSumExp: r.logSumExp, count: r.count)]
    }
}
