/// Cityscapes label ids the synthetic scenes draw (the values GTA5 label files store).
enum LID {
    static let staticObject: UInt8 = 4   // bins, benches: ignored in training, as in GTA5
    static let road: UInt8 = 7
    static let sidewalk: UInt8 = 8
    static let railTrack: UInt8 = 10
    static let building: UInt8 = 11
    static let wall: UInt8 = 12
    static let fence: UInt8 = 13
    static let bridge: UInt8 = 15
    static let pole: UInt8 = 17
    static let trafficLight: UInt8 = 19
    static let trafficSign: UInt8 = 20
    static let vegetation: UInt8 = 21
    static let terrain: UInt8 = 22
    static let sky: UInt8 = 23
    static let person: UInt8 = 24
    static let rider: UInt8 = 25
    static let car: UInt8 = 26
    static let truck: UInt8 = 27
    static let bus: UInt8 = 28
    static let train: UInt8 = 31
    static let motorcycle: UInt8 = 32
    static let bicycle: UInt8 = 33
}

typealias RGB = SIMD3<Float>

/// One colour of one class: `game` is the flat saturated colour of the game style, `photo` the
/// natural base colour the photo style varies, lights and weathers.
struct Tone {
    let game: (UInt8, UInt8, UInt8)
    let photo: (UInt8, UInt8, UInt8)
    let emissive: Bool

    init(_ game: (UInt8, UInt8, UInt8), _ photo: (UInt8, UInt8, UInt8), emissive: Bool = false) {
        self.game = game
        self.photo = photo
        self.emissive = emissive
    }
}

/// Tone indices with a meaning shared by several classes.
enum T {
    static let roadMarking: UInt8 = 3, roadYellow: UInt8 = 4, roadPatch: UInt8 = 5
    static let curb: UInt8 = 3
    static let window: UInt8 = 6, litWindow: UInt8 = 7, door: UInt8 = 8, trim: UInt8 = 9
    static let trunk: UInt8 = 3
    static let skin: UInt8 = 0, skinDark: UInt8 = 1, hair: UInt8 = 9
    static let carGlass: UInt8 = 7, carTyre: UInt8 = 8, carTail: UInt8 = 9, carHead: UInt8 = 10
    static let lamp: UInt8 = 3
}

enum Palette {
    /// Tones per label id.
    static let tones: [UInt8: [Tone]] = [
        LID.road: [Tone((60, 60, 68), (82, 82, 86)), Tone((72, 70, 80), (95, 94, 96)), Tone((52, 54, 62), (70, 71, 75)),
                   Tone((235, 235, 235), (200, 200, 196)), Tone((250, 200, 20), (200, 170, 60)), Tone((44, 44, 50), (60, 60, 62))],
        LID.sidewalk: [Tone((190, 170, 200), (150, 146, 140)), Tone((175, 160, 185), (135, 132, 128)),
                       Tone((205, 185, 210), (165, 160, 150)), Tone((220, 210, 225), (175, 172, 168))],
        LID.railTrack: [Tone((140, 140, 150), (120, 118, 115)), Tone((110, 80, 50), (90, 75, 60))],
        LID.building: [Tone((200, 120, 90), (150, 95, 80)), Tone((230, 200, 140), (190, 175, 150)), Tone((150, 170, 200), (130, 135, 140)),
                       Tone((240, 240, 230), (200, 198, 190)), Tone((120, 100, 160), (110, 100, 95)), Tone((90, 160, 140), (160, 150, 130)),
                       Tone((40, 70, 110), (55, 65, 80)), Tone((255, 230, 120), (250, 225, 160), emissive: true),
                       Tone((100, 60, 40), (70, 55, 45)), Tone((80, 80, 90), (90, 88, 85))],
        LID.wall: [Tone((170, 150, 120), (140, 135, 125)), Tone((130, 130, 170), (115, 112, 108)), Tone((200, 190, 160), (160, 155, 140))],
        LID.fence: [Tone((150, 110, 70), (120, 100, 80)), Tone((170, 180, 190), (140, 145, 150)), Tone((90, 70, 50), (70, 65, 60))],
        LID.bridge: [Tone((120, 110, 100), (105, 100, 95)), Tone((80, 75, 70), (75, 72, 70))],
        LID.pole: [Tone((130, 130, 140), (110, 110, 110)), Tone((70, 70, 80), (60, 60, 62)), Tone((40, 110, 60), (60, 80, 65)),
                   Tone((255, 250, 210), (255, 240, 200), emissive: true)],
        LID.trafficLight: [Tone((30, 30, 30), (35, 35, 35)), Tone((255, 30, 30), (230, 60, 50), emissive: true),
                           Tone((255, 180, 0), (230, 170, 60), emissive: true), Tone((30, 240, 90), (80, 220, 140), emissive: true),
                           Tone((230, 200, 0), (180, 160, 40))],
        LID.trafficSign: [Tone((230, 20, 40), (180, 40, 45)), Tone((20, 80, 220), (40, 80, 160)), Tone((250, 250, 250), (225, 225, 220)),
                          Tone((255, 220, 0), (220, 190, 40)), Tone((160, 160, 170), (130, 130, 132)), Tone((0, 150, 80), (30, 110, 70))],
        LID.vegetation: [Tone((40, 160, 40), (60, 95, 40)), Tone((70, 190, 50), (80, 110, 50)), Tone((20, 120, 50), (45, 75, 35)),
                         Tone((110, 70, 30), (80, 65, 50))],
        LID.terrain: [Tone((150, 220, 80), (120, 140, 70)), Tone((120, 200, 70), (100, 125, 60)), Tone((180, 140, 90), (135, 115, 90))],
        LID.sky: [Tone((30, 110, 230), (95, 135, 185)), Tone((50, 130, 240), (115, 150, 195)), Tone((75, 150, 245), (135, 165, 205)),
                  Tone((100, 170, 250), (155, 180, 212)), Tone((130, 190, 252), (175, 195, 220)), Tone((160, 210, 255), (200, 215, 230))],
        LID.person: personTones,
        LID.rider: personTones,
        LID.car: [Tone((220, 30, 30), (140, 30, 30)), Tone((30, 80, 220), (40, 60, 120)), Tone((240, 240, 240), (210, 210, 208)),
                  Tone((20, 20, 20), (30, 30, 32)), Tone((250, 200, 0), (190, 170, 60)), Tone((40, 170, 70), (50, 90, 60)),
                  Tone((160, 160, 170), (140, 140, 145)), Tone((50, 80, 120), (40, 50, 60)), Tone((15, 15, 15), (20, 20, 20)),
                  Tone((255, 0, 40), (200, 30, 30), emissive: true), Tone((255, 255, 200), (240, 240, 220), emissive: true)],
        LID.truck: [Tone((240, 120, 0), (170, 100, 40)), Tone((0, 120, 200), (50, 80, 120)), Tone((230, 230, 230), (200, 200, 200)),
                    Tone((200, 200, 210), (180, 180, 180)), Tone((150, 60, 40), (120, 70, 60)), Tone((50, 80, 120), (40, 50, 60)),
                    Tone((15, 15, 15), (20, 20, 20)), Tone((255, 0, 40), (200, 30, 30), emissive: true)],
        LID.bus: [Tone((255, 200, 0), (200, 170, 60)), Tone((220, 30, 30), (150, 50, 45)), Tone((30, 140, 220), (60, 100, 140)),
                  Tone((50, 80, 120), (40, 50, 60)), Tone((15, 15, 15), (20, 20, 20)), Tone((255, 0, 40), (200, 30, 30), emissive: true),
                  Tone((240, 240, 240), (205, 205, 205))],
        LID.train: [Tone((200, 20, 60), (150, 40, 50)), Tone((240, 240, 240), (200, 200, 200)), Tone((0, 150, 170), (50, 110, 120)),
                    Tone((50, 80, 120), (40, 50, 60)), Tone((255, 210, 0), (190, 160, 50)), Tone((40, 40, 40), (45, 45, 45))],
        LID.motorcycle: [Tone((220, 20, 20), (140, 30, 30)), Tone((30, 30, 30), (30, 30, 32)), Tone((240, 120, 0), (170, 100, 40)),
                         Tone((15, 15, 15), (20, 20, 20)), Tone((200, 200, 210), (170, 170, 175))],
        LID.bicycle: [Tone((200, 0, 40), (140, 30, 40)), Tone((0, 90, 200), (40, 60, 110)), Tone((30, 30, 30), (35, 35, 35)),
                      Tone((10, 10, 10), (20, 20, 20))],
        LID.staticObject: [Tone((30, 120, 60), (50, 80, 55)), Tone((110, 110, 120), (90, 90, 92)), Tone((160, 110, 60), (110, 85, 60))],
    ]

    static let personTones: [Tone] = [
        Tone((240, 190, 150), (200, 160, 135)), Tone((160, 110, 70), (130, 95, 75)), Tone((220, 40, 40), (150, 50, 50)),
        Tone((40, 60, 200), (50, 60, 110)), Tone((240, 220, 40), (180, 160, 70)), Tone((245, 245, 245), (200, 200, 198)),
        Tone((25, 25, 25), (30, 30, 32)), Tone((30, 40, 90), (40, 45, 70)), Tone((100, 100, 100), (80, 80, 82)),
        Tone((50, 30, 10), (40, 32, 25)), Tone((40, 180, 60), (70, 110, 70)),
    ]

    /// The game-style colour of every (label id, tone), made unique across all of them: a
    /// colour that two classes would share is nudged by one level, so a game image's colour
    /// alone names the class of every pixel (the label-exactness test relies on it).
    static let game: [UInt8: [(UInt8, UInt8, UInt8)]] = {
        var used = Set<UInt32>()
        var out: [UInt8: [(UInt8, UInt8, UInt8)]] = [:]
        for label in tones.keys.sorted() {
            out[label] = tones[label]!.map { tone in
                var (r, g, b) = tone.game
                var step = 0
                while used.contains(UInt32(r) << 16 | UInt32(g) << 8 | UInt32(b)) {
                    step += 1
                    b = UInt8(clamping: Int(tone.game.2) + (step % 2 == 1 ? 1 : -1) * ((step + 1) / 2))
                    if step > 40 { r = r &+ 1; step = 0 }
                }
                used.insert(UInt32(r) << 16 | UInt32(g) << 8 | UInt32(b))
                return (r, g, b)
            }
        }
        return out
    }()

    static func toneCount(_ label: UInt8) -> Int { tones[label]!.count }
}
