import ArgumentParser
import DGAutograd
import DGBase
import DGCheckpoint
import DGDiffusion
import DGLayers
import DGModels
import DGTensor
import DGTraining
import Foundation

extension Bench {
    /// One training step of an SD 1.5-shaped UNet (+ ControlNet) with random weights: what a
    /// step costs in time and memory, without downloading weights or data.
    struct TrainStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train-step",
            abstract: "Time and peak memory of training steps on random weights (SD 1.5 shapes by default).",
            discussion: """
            Runs the ControlNet (or UNet) forward, the backward, clipping and AdamW on random latents, text \
            features and a random one-hot condition (the VAE and text encoder, frozen and run without \
            gradients, are left out). Prints the time of each step and the peak resident memory of the \
            process. Compare gradient checkpointing or bf16 frozen weights by running it once with and \
            once without: the peak is per process.
            """)

        @Option(help: "UNet config.json (default: Stable Diffusion 1.5's).")
        var unetConfig: String?

        @Option(help: "Replace the config's block_out_channels (e.g. 160,320,640,640 for a quarter-size model).")
        var channels: String?

        @Option(help: "What trains: controlnet (the UNet frozen under it) or unet.")
        var target = "controlnet"

        @Option(help: "Image side in pixels (latents are 1/8).")
        var resolution = 256

        @Option(help: "Batch size.")
        var batchSize = 1

        @Option(help: "Steps to run (the first also allocates the optimizer state).")
        var steps = 2

        @Flag(help: "Recompute blocks in backward instead of keeping their activations.")
        var gradientCheckpointing = false

        @Option(help: "Storage type of the frozen UNet's weights: f32, bf16, f16.")
        var frozenDtype: DType = .f32

        @Option(help: "adamw, or adamw8bit (8-bit blockwise moments).")
        var optimizer: AdamW.StateStorage = .f32

        @Option(help: "Seed of the weights and inputs.")
        var seed: UInt64 = 0

        func run() throws {
            var config = try JSON.parse(unetConfig.map { try String(contentsOfFile: $0, encoding: .utf8) } ?? DefaultConfigs.unetText)
            if let channels {
                let list = channels.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                config.set("block_out_channels", .array(list.map { .int($0) }))
            }
            guard ["controlnet", "unet"].contains(target) else { throw ValidationError("--target is controlnet or unet") }
            let t0 = Date()
            let unet = try UNet2DConditionModel(config: config)
            unet.initializeParameters(seed: seed)
            var controlnet: ControlNetModel?
            if target == "controlnet" {
                let cn = try ControlNetModel.initialized(from: unet, conditioningChannels: 20, seed: seed &+ 1)
                // Non-zero output convolutions, so the whole ControlNet does real work in backward.
                for block in cn.controlnet_down_blocks + [cn.controlnet_mid_block] { block.initializeParameters(seed: seed &+ 2) }
                controlnet = cn
            }
            var options = TrainingOptions(learningRate: 1e-5, schedule: LRSchedule(.constant, totalSteps: steps))
            options.gradientCheckpointing = gradientCheckpointing
            options.frozenDType = frozenDtype
            options.optimizerState = optimizer
            options.maxGradNorm = 1
            // The trainer's own update: what a run of train-controlnet / finetune-unet executes per step.
            let update = try DiffusionUpdate(unet: unet, controlnet: controlnet, options: options)
            let params = update.trainableParameters.map(\.parameter)
            let latentSide = resolution / 8
            let text = Tensor(shape: [batchSize, 77, unet.cross_attention_dim[0]],
                              floats: RandomStream(seed: seed, 10).normals(batchSize * 77 * unet.cross_attention_dim[0]))
            let labels = Tensor(shape: [batchSize, resolution, resolution],
                                floats: RandomStream(seed: seed, 11).integers(batchSize * resolution * resolution, below: 20).map(Float.init))
            let condition = controlnet == nil ? nil : SemanticCondition.oneHot(labels)
            emit(String(format: "built %@ (%.1fM trainable parameters, frozen UNet %@) in %.1f s; peak RSS so far %@",
                        target, Double(params.reduce(0) { $0 + $1.count }) / 1e6, frozenDtype.name, Date().timeIntervalSince(t0),
                        ProgressBar.bytes(peakRSS())))
            var times: [Double] = [], transient: [Double] = []
            for step in 0..<steps {
                let shape = [batchSize, unet.in_channels, latentSide, latentSide]
                let n = shape.reduce(1, *)
                let inputs = DiffusionInputs(noisy: Tensor(shape: shape, floats: RandomStream(seed: seed, 12, UInt64(step)).normals(n)),
                                             noise: Tensor(shape: shape, floats: RandomStream(seed: seed, 13, UInt64(step)).normals(n)),
                                             timesteps: RandomStream(seed: seed, 14, UInt64(step)).integers(batchSize, below: 1000).map(Float.init),
                                             text: text, condition: condition)
                let before = residentBytes()
                resetPeakResident()
                let start = Date()
                // Phase by phase: what the forward keeps for backward, and each phase's peak.
                var loss: Var? = update.loss(inputs)
                let lossValue = loss!.value.floats[0]
                let kept = residentBytes() - before, forwardPeak = peakResidentSinceReset() - before
                resetPeakResident()
                Autograd.backward(loss!)
                loss = nil
                let backwardPeak = peakResidentSinceReset() - before
                resetPeakResident()
                _ = try update.clippedNorm(step: step)
                update.apply(learningRate: options.learningRate)
                let updatePeak = peakResidentSinceReset() - before
                let seconds = Date().timeIntervalSince(start)
                times.append(seconds)
                let stepPeak = before + max(forwardPeak, backwardPeak, updatePeak)
                transient.append(stepPeak - before)
                emit(String(format: "step %d: %.2f s, loss %.5f, resident before %@; forward keeps +%@ (peak +%@), backward peak +%@, clip+update peak +%@; peak RSS %@",
                            step + 1, seconds, lossValue, ProgressBar.bytes(before), ProgressBar.bytes(kept), ProgressBar.bytes(forwardPeak),
                            ProgressBar.bytes(backwardPeak), ProgressBar.bytes(updatePeak), ProgressBar.bytes(peakRSS())))
            }
            let later = times.dropFirst()
            emit(String(format: "%@ at %dx%d, batch %d, gradient checkpointing %@, frozen %@: %.2f s/step (steps after the first), step transient +%@ (last step), peak RSS %@",
                        target, resolution, resolution, batchSize, gradientCheckpointing ? "on" : "off", frozenDtype.name,
                        later.isEmpty ? times[0] : later.reduce(0, +) / Double(later.count), ProgressBar.bytes(transient.last ?? 0),
                        ProgressBar.bytes(peakRSS())))
        }
    }
}
