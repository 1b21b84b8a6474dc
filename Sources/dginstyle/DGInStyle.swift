import ArgumentParser
import Foundation

@main
struct DGInStyle: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dginstyle",
        abstract: "Convert, fine-tune and sample Stable Diffusion 1.5 + ControlNet for DGInStyle data generation.",
        subcommands: [])
}
