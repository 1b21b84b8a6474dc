import ArgumentParser
import DGDiffusion
import Foundation

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Say how many items of a generate run are done, failed or missing, in all and per shard.",
        discussion: """
        Reads DIR's run.json, shards.json (the item and shard count of the latest generate run), records/ and \
        failed/ only: no model or label map is loaded, so it can run on a login node while shards run elsewhere. \
        An item is done when its record exists, failed when its shard wrote failed/ITEM.json or left images or \
        labels without a record (a shard killed while writing, or writing now), and missing otherwise. \
        Shard I/N holds the items with index % N == I. --incomplete prints the shards with an item not done \
        as an sbatch --array list (empty when the run is complete). The exit status is 0 whether or not the run \
        is complete; 1 when DIR is not a generate output folder.
        """)

    @Argument(help: "The generate output folder (--out).")
    var dir: String

    @Option(help: "Item count (default: the latest generate run's, from shards.json).")
    var count: Int?

    @Option(help: "Shard count N (default: the latest generate run's).")
    var shards: Int?

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Print only the incomplete shards, comma-separated (for sbatch --array).")
    var incomplete = false

    // Bad values are checked in run (by GenerationStatus.read), not validate: exit status 1, as
    // every other bad input, rather than ArgumentParser's 64.
    func run() throws {
        if json && incomplete { throw GenerationError("--json and --incomplete are exclusive") }
        let status = try GenerationStatus.read(out: dir, count: count, shards: shards)
        if incomplete {
            emit(status.incompleteShards.map(String.init).joined(separator: ","))
        } else {
            emit(json ? status.json.pretty : status.text)
        }
    }
}
