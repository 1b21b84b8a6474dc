import DGBase
import DGCheckpoint
import DGData
import DGDiffusion
import DGModels
import Foundation

/// What a VAE keeps of an image: the style measure compares generated images with references
/// that went through the same encode-decode, so the VAE's own blur is not counted as style.
public enum VAERoundTrip {
    public static func loadVAE(_ path: String) throws -> AutoencoderKL {
        let ck = try Checkpoint.open(path)
        guard let c = ck.component("vae") else { throw FileError(path, "holds no VAE") }
        guard let vae = try loadModel(c).1 as? AutoencoderKL else { throw FileError(path, "its vae is not an AutoencoderKL") }
        return vae
    }

    /// The image as the VAE reconstructs it (a posterior sample, decoded).
    public static func roundTrip(_ image: Image, vae: AutoencoderKL, file: String, seed: UInt64) throws -> Image {
        let f = 1 << (vae.block_out_channels.count - 1)
        guard image.width % f == 0, image.height % f == 0 else {
            throw FileError(file, "is \(image.width)x\(image.height); the VAE needs sides that are multiples of \(f)")
        }
        let latents = vae.encodeToLatents(Resize.toUnit(image.tensor()), generator: NoiseGenerator(seed: seed))
        return Image(tensor: Resize.toSigned(vae.decodeToImage(latents)))
    }
}
