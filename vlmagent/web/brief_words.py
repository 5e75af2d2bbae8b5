"""The vocabulary of the web-generation prompts dataset (briefs.py): accent colours, category
phrases, and per category the name parts, topics, section blurbs and interactive kinds; request
templates. Changing any of it changes data/webgen/prompts.jsonl (regenerate and commit it)."""
from __future__ import annotations

from typing import Any

# Dark enough that white text on them and they on white both pass WCAG AA (>= 4.5:1).
ACCENTS = ["#2a6f97", "#7b2d26", "#386641", "#6a4c93", "#264653", "#9c2f5b", "#1d5c8a",
           "#8a4b20", "#0f6b5c", "#5b3fa3", "#a23b2a", "#35577d", "#8a3b7a", "#b03a48",
           "#3f6212", "#0369a1"]
PHRASE = {"landing": "landing page", "portfolio": "portfolio site", "shop": "shop page",
          "dashboard": "dashboard", "form": "sign-up page", "game": "browser game page",
          "docs": "documentation page", "blog": "blog", "tool": "web tool"}
W = str.split  # word lists are written as one string each, to keep the tables short

# Per category: name parts (first x second), topics (the second part with its words),
# sections -> blurb template, and the interactive kinds it cycles through.
CATS: dict[str, dict[str, Any]] = {
    "landing": {"first": W("Nimbus Lumen Harbor Sprout Orbit Maple Cobalt Juniper Ember Atlas "
                           "Willow Quartz Pebble Beacon Summit Tidal"),
                "topics": [t.split("|") for t in [
                    "Notes|a note-taking app for students|taking notes|Notes that keep up with "
                    "your lectures.", "Pay|an invoicing tool for freelancers|sending invoices|"
                    "Send an invoice in under a minute.", "Fit|a home workout app|working out at "
                    "home|Ten-minute workouts for busy days.", "Cast|a podcast hosting service|"
                    "hosting a podcast|Publish your show everywhere at once.", "Route|a delivery "
                    "route planner|planning deliveries|Fewer miles, happier drivers.", "Desk|a "
                    "desk booking app for hybrid offices|booking desks|Find a desk before you "
                    "leave home.", "Meals|a weekly meal planner|planning meals|A week of dinners"
                    " planned in five minutes.", "Sync|a file sync service for small teams|"
                    "sharing files|Your files, current on every device.", "Lingo|a "
                    "language-learning app|learning a language|Learn a language ten minutes at a"
                    " time.", "Budget|a household budgeting app|budgeting|See where every dollar"
                    " goes.", "Rides|a neighbourhood car-sharing service|sharing cars|A car "
                    "nearby whenever you need one.", "Sleep|a sleep-tracking app|sleeping better|"
                    "Better nights, one small habit at a time."]],
                "sections": {"Features": "It makes {use} simple.", "How it works": "Sign up "
                             "and start in five minutes.", "Pricing": "Free for 14 days, then "
                             "one flat fee.", "Reviews": "Teams in forty countries love it.",
                             "FAQ": "Quick answers on billing and privacy.", "Get started":
                             "Make a free account; no card needed."},
                "kinds": ["toggle", "counter", "tabs"]},
    "portfolio": {"first": W("Maya Jonas Amara Luca Priya Tomas Ines Kenji Sofia Omar Hana Felix"
                             " Zara Mateo Lena Ravi"),
                  "topics": [t.split("|") for t in [
                      "Okafor|photographer|Portraits|Weddings", "Lindqvist|illustrator|Books|"
                      "Posters", "Moreau|architect|Homes|Schools", "Castillo|web designer|"
                      "Websites|Branding", "Nakamura|ceramicist|Bowls|Vases", "Brennan|furniture"
                      " maker|Chairs|Tables", "Ahmadi|animator|Short films|Adverts", "Kowalski|"
                      "landscape designer|Gardens|Rooftops", "Ferreira|type designer|Typefaces|"
                      "Lettering", "Haddad|product designer|Lamps|Kitchenware", "Novak|"
                      "documentary filmmaker|Films|Series", "Osei|muralist|Murals|Interiors"]],
                  "sections": {"Work": "Recent projects, big and small.", "About": "Ten "
                               "years of work, based in {city}.", "Services": "Commissions, "
                               "workshops and advice.", "Clients": "Publishers, shops and city "
                               "councils.", "Contact": "Say hello; I reply within two days."},
                  "kinds": ["filter", "toggle"]},
    "shop": {"first": W("Alder Harbor Millbrook Oldtown Riverside Copper Fernhill Bayview "
                        "Oakhollow Saltmarsh Kestrel Linden"),
             "topics": [t.split("|") for t in [
                 "Candles|hand-poured soy candles|Fig and Cedar|Sea Salt|Lavender Night|Amber "
                 "Glow", "Tea Co.|loose-leaf tea|Morning Sencha|Earl Grey|Jasmine Pearls|Smoky "
                 "Lapsang", "Ceramics|handmade mugs and bowls|Speckled Mug|Deep Bowl|Tall Mug|"
                 "Noodle Bowl", "Books|second-hand books|Poetry Bundle|Atlas of Islands|Mystery "
                 "Box|Cookbook Classics", "Plants|houseplants and pots|Snake Plant|Terracotta Pot"
                 "|Pothos|Glazed Planter", "Cycles|refurbished city bikes|Dutch Roadster|Commuter"
                 " Helmet|Folding Bike|Front Light", "Coffee|small-batch coffee beans|Ethiopia "
                 "Guji|Colombia Huila|House Espresso|Decaf Blend", "Paper Goods|notebooks and "
                 "pens|Dot Grid Notebook|Brass Pen|Pocket Journal|Ink Refills", "Cheese Shop|"
                 "farmhouse cheese|Aged Cheddar|Blue Wheel|Goat Log|Smoked Gouda", "Soapworks|"
                 "natural soaps|Oat Bar|Charcoal Bar|Rose Bar|Mint Shampoo Bar", "Records|vinyl "
                 "records|Jazz Crate|Soul Singles|Ambient Box|Folk Revival", "Knitwear|wool "
                 "knitwear|Fisherman Sweater|Ribbed Beanie|Alpaca Scarf|Cable Cardigan"]],
             "sections": {"Bestsellers": "Our most-loved {use}.", "New in": "Fresh stock "
                          "lands every Friday.", "Our story": "It began as a market stall.",
                          "Shipping": "Free shipping on orders over $40.", "Visit us": "Open "
                          "Tuesday to Sunday, 10 to 6."},
             "kinds": ["counter", "filter"]},
    "dashboard": {"first": W("Northwind Bluepeak Copperline Greenway Ironwood Silverlake Redstone"
                             " Clearwater Highfield Brightwater Stonegate Westbrook"),
                  "topics": [t.split("|") for t in [
                      "Fleet|delivery vans|Vans out|Deliveries|Late stops", "Sales|online sales|"
                      "Orders|Revenue ($)|Refunds", "Energy|building energy use|Kilowatt hours|"
                      "Peak load (kW)|Solar share (%)", "Clinic|clinic appointments|Appointments"
                      "|No-shows|Wait (min)", "Support|support tickets|Open tickets|Solved|First"
                      " reply (h)", "Greenhouse|greenhouse sensors|Temperature (C)|Humidity (%)|"
                      "Water (L)", "Traffic|website traffic|Visitors|Page views|Sign-ups",
                      "Library|library loans|Loans|Returns|Overdue", "Warehouse|warehouse stock|"
                      "Items in stock|Shipped|Low stock", "Gym|gym attendance|Check-ins|Classes|"
                      "New members"]],
                  "sections": {"Overview": "Key numbers for {use}, live.", "Metrics":
                               "Compare today, this week and month.", "Activity": "The latest "
                               "events, as they happen.", "Alerts": "Anything unusual shows in "
                               "red.", "Reports": "A weekly summary as a PDF."},
                  "kinds": ["tabs", "toggle"]},
    "form": {"first": W("Maplecourt Lakeside Hillcrest Brookfield Elmgrove Sunnyvale Pinecrest "
                        "Foxglove Willowbank Seaview Ashford Rosewood"),
             "topics": [t.split("|") for t in [
                 "Yoga Studio|a yoga studio|class booking|Book a class|Email:email",
                 "Dental Care|a dental clinic|appointment request|Request an appointment|"
                 "Phone:tel|Preferred date:date", "Food Bank|a food bank|volunteer sign-up|Sign "
                 "up to volunteer|Email:email|Hours per week:number", "Book Club|a book club|"
                 "membership form|Join the club|Email:email", "Running Club|a running club|race"
                 " registration|Register for the race|Email:email|Age:number", "Community Garden"
                 "|a community garden|plot application|Apply for a plot|Email:email|Phone:tel",
                 "Music School|a music school|trial lesson booking|Book a trial lesson|Email:"
                 "email|Instrument:text", "Coworking|a coworking space|tour request|Request a "
                 "tour|Email:email|Date:date", "Animal Shelter|an animal shelter|adoption "
                 "enquiry|Send an enquiry|Email:email|Phone:tel", "Theatre|a community theatre|"
                 "ticket reservation|Reserve tickets|Email:email|Seats:number", "Swim School|a "
                 "swim school|lesson sign-up|Sign up for lessons|Email:email|Age:number",
                 "Repair Cafe|a repair cafe|repair booking|Book a repair|Email:email|Item:text"]],
             "sections": {"About us": "Run by neighbours, for neighbours.", "Next steps":
                          "We reply within one working day.", "Who can join": "Everyone is "
                          "welcome, at any age.", "Questions": "Call or write; a person answers.",
                          "Hours": "Open Monday to Saturday, 9 to 5."},
             "kinds": ["form"]},
    "game": {"first": W("Lucky Sleepy Cosmic Tiny Brave Dizzy Golden Midnight Rusty Jolly Misty "
                        "Electric"),
             "topics": [t.split("|") for t in [
                 "Fireflies|Catch a firefly|fireflies caught|Which insect glows at night?|Moth|"
                 "Firefly|Beetle", "Robots|Build a robot|robots built|What powers most toy "
                 "robots?|Steam|Batteries|Sand", "Penguins|Feed a penguin|penguins fed|Where do "
                 "most penguins live?|The Arctic|The Southern Hemisphere|Deserts", "Comets|Spot a"
                 " comet|comets spotted|What is a comet's tail made of?|Fire|Gas and dust|Metal",
                 "Dragons|Hatch a dragon|dragons hatched|What do dragons guard in old tales?|"
                 "Bridges|Treasure|Forests", "Pirates|Find a coin|coins found|What marks the spot"
                 " on a treasure map?|A circle|An X|A star", "Planets|Visit a planet|planets "
                 "visited|Which planet has the biggest rings?|Mars|Saturn|Venus", "Bees|Collect "
                 "nectar|flowers visited|What do bees make from nectar?|Wax|Honey|Silk",
                 "Ghosts|Find a ghost|ghosts found|When do ghosts come out in stories?|At noon|At"
                 " midnight|At lunch", "Trains|Board a train|trains boarded|What did early "
                 "trains burn for power?|Oil|Coal|Wood chips", "Rockets|Launch a rocket|rockets "
                 "launched|What do rockets push against in space?|Air|Their own exhaust|Stars",
                 "Gardens|Plant a seed|seeds planted|What do seeds need to sprout?|Salt|Water|"
                 "Sand"]],
             "sections": {"How to play": "Each round takes under a minute.", "Rules": "No "
                          "sign-up, no ads, no timers.", "High scores": "Beat your best, then "
                          "tell a friend.", "About": "Made in one weekend by two friends.",
                          "Credits": "Art, code and sound by a tiny team."},
             "kinds": ["counter", "quiz"]},
    "docs": {"first": W("Tiny Swift Plain Micro Quick Neat Calm Bright Lean Snappy Simple Hyper"),
             "topics": [t.split("|") for t in [
                 "Queue|a job queue for Node.js", "Router|a small client-side router", "Store|a"
                 " state store for web apps", "Chart|a charting library", "Dates|a date "
                 "formatting library", "Forms|a form validation library", "Cache|an in-memory "
                 "cache", "Log|a structured logger", "Grid|a data grid component", "Mock|an HTTP"
                 " mocking tool for tests", "Icons|an SVG icon set", "Parse|a CSV parser"]],
             "sections": {"Install": "Get it from npm; no dependencies.", "Quick start":
                          "Import it and call one function.", "API": "Every function is typed "
                          "and documented.", "Examples": "Copy-paste code for common tasks.",
                          "FAQ": "Answers to the most asked questions.", "Changelog": "Every "
                          "release lists its changes."},
             "kinds": ["tabs", "toggle"]},
    "blog": {"first": W("Wandering Quiet Hungry Curious Patient Restless Muddy Sunny Salty Lazy "
                        "Thrifty Urban"),
             "topics": [t.split("|") for t in [
                 "Fork|a food blog|Recipes|Restaurants", "Garden|a gardening blog|Vegetables|"
                 "Flowers", "Wheel|a cycling blog|Routes|Gear", "Compass|a travel blog|Europe|"
                 "Asia", "Bookshelf|a book review blog|Fiction|Non-fiction", "Lens|a photography"
                 " blog|Tips|Trips", "Kettle|a tea blog|Tastings|Brewing", "Keyboard|a "
                 "programming blog|Python|Web", "Trail|a hiking blog|Day hikes|Kit", "Workbench|"
                 "a DIY blog|Repairs|Decor", "Easel|a painting blog|Watercolour|Oils", "Loom|a "
                 "weaving blog|Patterns|Yarn"]],
             "sections": {"Latest": "New stories every Sunday morning.", "Popular": "The "
                          "posts readers come back to.", "About me": "Written in a flat with a "
                          "big window.", "Newsletter": "One friendly email a month.", "Archive":
                          "Every post since the first, by month."},
             "kinds": ["filter", "counter", "toggle"]},
    "tool": {"first": W("Pocket Quick Simple Handy Clever Tidy Easy Daily Friendly Smart"),
             "topics": [t.split("|") for t in [
                 "Tips|tip calculator|Bill ($):60|Tip (%):15|a * b / 100|Tip ($)", "Split|bill "
                 "splitter|Total ($):120|People:4|a / b|Each person pays ($)", "BMI|BMI "
                 "calculator|Weight (kg):70|Height (cm):175|a / (b / 100) ** 2|BMI", "Unit "
                 "Price|unit price calculator|Price ($):6|Grams:500|a / b * 100|Price per 100 g "
                 "($)", "Loans|loan planner|Loan ($):5000|Months:24|a * 1.05 / b|Monthly payment"
                 " ($)", "Savings|savings planner|Monthly saving ($):200|Months:12|a * b|Saved "
                 "($)", "Percent|percentage calculator|Percent:20|Of:80|a * b / 100|Result",
                 "Pace|running pace calculator|Distance (km):10|Minutes:55|b / a|Minutes per km",
                 "Fuel|fuel estimator|Distance (km):300|Litres per 100 km:6|a * b / 100|Litres "
                 "needed", "Discount|discount calculator|Price ($):80|Discount (%):25|a * (1 - b "
                 "/ 100)|Sale price ($)", "Scaler|recipe scaler|Grams in recipe:250|Servings "
                 "wanted (of 4):6|a * b / 4|Grams needed"]],
             "sections": {"How to use": "Type two numbers, press the button.", "Formula":
                          "Simple maths you can check by hand.", "Tips": "Results are shown to "
                          "two decimals.", "Privacy": "Nothing you type leaves your browser."},
             "kinds": ["calculator"]},
}
CITIES = W("Lisbon Oslo Toronto Melbourne Nairobi Kyoto Bristol Porto Austin Montreal Dublin "
           "Seoul")
ADJ = W("Harbour Autumn Northern Quiet Golden Coastal")
TEMPLATES = [
    "Build a {phrase} for {name}, {what}, with the tagline \"{tagline}\", {secs} sections "
    "and {accent} as the accent colour. It needs {widget}.",
    "I need a {phrase} for {name} ({what}) with sections for {secs}. Please add "
    "{widget}, and make {accent} the main colour.",
    "Create a {phrase} called {name}: \"{tagline}\" It should have {secs} sections, {widget}, "
    "and an accent colour of {accent}.",
    "Could you make a {phrase} for {name}? It is {what}, the tagline is \"{tagline}\" and I "
    "want {secs} sections in {accent}, plus {widget}.",
]
REACT = [" Write it as a React component.", " Please build it with React.",
         " Use React for the page."]
